// MobileCLIP at small scale (MobileCLIP, arXiv 2311.17049; apple/ml-mobileclip), as one
// experiment: the first 20,000 Fashion-MNIST captions, two teachers trained with CLIP's loss, their
// embeddings of 5 augmentations per image stored once (dataset reinforcement), then the same
// student trained for the same 312 steps with CLIP's loss and with the reinforced loss
// (λ = 0.75), seeds 0 and 1; zero-shot accuracy on the 10,000 test images with prompt templates;
// the reinforced student re-parameterised and evaluated again (its accuracy must not move).
// `dsl run examples/mobileclip/mobileclip.dsl` writes docs/mobileclip.{tsv,md} and
// docs/mobileclip-zero-shot.png.
open "teachers.dsl"
open "student.dsl"

experiment main =
    let captions = Stage.data "fashion-captions" (out = "../../data/fashion-captions-20k") (trainLimit = 20000)
    let teacherRuns = [ Stage.train teacherA (data = captions); Stage.train teacherB (data = captions) ]

    let reinforced =
        Stage.reinforce studentReinforced (teachers = teacherRuns) (augmentations = 5) (data = captions)
            (name = "reinforce")

    let row what seed tested =
        {
            model = what
            seed = seed
            zero_shot_top1 = metric tested "accuracy"
            zero_shot_top5 = metric tested "top5"
        }

    let clip seed = Stage.train studentClip (data = captions) (seed = seed)
    let distilled seed = Stage.train studentReinforced (data = reinforced) (seed = seed)

    let rows =
        [ row "teacherA" "1" (Stage.eval (List.head teacherRuns)); row "teacherB" "2" (Stage.eval (List.last teacherRuns)) ]
        @ List.concat
            [ for seed in [ 0; 1 ] ->
                [
                    row "studentClip" (string seed) (Stage.eval (clip seed))
                    row "studentReinforced" (string seed) (Stage.eval (distilled seed))
                ] ]
        @ [ row "studentReinforced-deploy" "0" (Stage.eval (Stage.transform (distilled 0) "reparam")) ]

    {
        tables = [ table "mobileclip-zero-shot" rows (dir = "../../docs") ]
        plots =
            [
                plot "mobileclip-zero-shot" [ for r in rows -> { model = r.model + " " + r.seed; top1 = r.zero_shot_top1 } ]
                    (x = "model") (y = "top1") (kind = "bar")
                    (title = "Zero-shot top-1 on the Fashion-MNIST test set (students: same model, same 312 steps)")
                    (xLabel = "model and seed") (yLabel = "zero-shot top-1") (dir = "../../docs")
            ]
    }
