// FastViT-T8 and MCi0 at 256×256 and MobileOne-S0 at 224×224, batch 1 and 16, on this machine's
// cores: forward latency of the train (multi-branch) form against the re-parameterised deploy
// form, timed side by side in one process in alternating rounds (FastViT, arXiv 2303.14189,
// Table 1 reports deploy-form latency; MobileOne, arXiv 2206.04040, §3). Run it alone.
open "../examples/fastvit/models.dsl"

experiment main =
    let nets = [ { name = "fastvitT8"; net = fastvitT8 }; { name = "mci0"; net = mci0 }; { name = "mobileoneS0"; net = mobileoneS0 } ]
    let rows =
        List.concat
            [ for n in nets ->
                [ for batch in [ 1; 16 ] ->
                    let c = Stage.compare n.net (batch = batch) (rounds = 6) (repeats = 3)
                    {
                        model = n.name
                        batch = batch
                        train_ms = metric c "forward_a_ms"
                        deploy_ms = metric c "forward_b_ms"
                        deploy_over_train = metric c "forward_ratio"
                        params_train = metric c "params_a"
                        params_deploy = metric c "params_b"
                    } ] ]

    { tables = [ table "reparam-latency" rows (dir = "../docs") ] }
