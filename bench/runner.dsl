// The runner's own cost (issue 16): planning a 100-stage sweep, and rerunning it when every
// stage is done, must cost nothing next to the stages. Each stage here is a bench of a tiny
// linear model (no warm-up, one repeat), so a first run is quick and what a rerun measures is
// the runner: checking the file, keying 100 stages (IR, settings, tool version), reading 100
// results and writing the table.
//
//   dsl run bench/runner.dsl --dry-run    "planned in N ms"
//   dsl run bench/runner.dsl              the first run, then again: "100 stages: 0 ran, 100 cached"

model probe width : tensor[16] -> tensor[width] = linear width

experiment sweep =
    let rows =
        [ for w in [ 1 .. 100 ] ->
            { width = w; ms = metric (Stage.bench (probe w) (warmup = 0) (repeats = 1)) "median_ms" } ]

    { tables = [ table "runner-sweep" rows ] }
