[<EntryPoint>]
let main _ = TorchSharp.torch.ones(2L).sum().item<float32>() |> printfn "%f"; 0
