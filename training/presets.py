"""Override sets declared once: the presets (`--preset=NAME`) and the demo's small scale (`--demo`,
`study.py --demo`). Each names, per args class, the values it replaces; stage 2 and end-to-end get the
very same dict wherever a preset promises a fair fight, so the arms cannot drift apart.

The README and docs/presets.md say why each value is there.
"""
from typing import Any

from args_end_to_end import EndToEnd
from args_two_stage import Stage1, Stage2

Overrides = dict[type, dict[str, Any]]

# fair: the same optimiser, schedule, weight decay and cross attention for both arms, with the two
# changes that keep the CAM from printing a fixed grid (docs/cpu-study.md).
FAIR = dict(weight_decay=0.0, lr_schedule="cosine")
FAIR_FUSION = dict(FAIR, temperature="block", feature_norm="standard", cam_gate=True)
# cpu: fair, on a 2-core machine, trained on 170 RoadScene and 100 M3FD pairs (the shared data beside the
# project): RoadScene[170:200] and m3fd-train[200:] stay back as validation pairs for choosing the recipe,
# RoadScene[200:] as a test set. Random 64 px crops at the images' own resolution, a one-epoch lr warm-up,
# the output standardised to the statistics of the inputs' brighter-source rule instead of the min-max
# stretch, and deep activity weights that cannot have a pole (chosen on the validation pairs:
# docs/results.md, docs/cpu-study.md).
CPU_DATA = "../shared/data/roadscene[:170],../shared/data/m3fd-train[:100]"
CPU = dict(dataset=CPU_DATA, train_num=0, image_size=64, crop=True, cache=False, workers=0, log_every=9,
           checkpoint_every=100, warmup_epochs=1.0)
CPU_FUSION = dict(FAIR_FUSION, **CPU, epochs=20, lr=6e-3, output_norm="rule", deep_weights="magnitude")

PRESETS: dict[str, Overrides] = {
    "reference": {},  # the args files as they stand: the paper's recipe
    "fair": {Stage1: FAIR, Stage2: FAIR_FUSION, EndToEnd: FAIR_FUSION},
    "cpu": {Stage1: dict(FAIR, **CPU, epochs=10, batch=8, lr=5e-4), Stage2: CPU_FUSION, EndToEnd: CPU_FUSION},
}

# --demo: synthetic data (data/demo), a narrow model and a short schedule, minutes on a CPU.
DEMO_RUN = dict(dataset="data/demo/train", out_root="models/demo", train_num=0, image_size=64, batch=4, workers=0,
                log_every=12, checkpoint_every=48, preview_images=4, lr_step_epochs=30)
DEMO_ENCODERS = dict(shallow=8, growth=8, deep=16)  # stage 2 takes its encoders' widths from their files
DEMO_FUSION = dict(decoder=16, tile=8, heads=4, mlp_ratio=2, test_dir="data/demo/test", epochs=40)
DEMO: Overrides = {Stage1: dict(DEMO_RUN, **DEMO_ENCODERS, decoder=16, epochs=6), Stage2: dict(DEMO_RUN, **DEMO_FUSION),
                   EndToEnd: dict(DEMO_RUN, **DEMO_ENCODERS, **DEMO_FUSION)}

# study.py --demo: the same scale for 3 arms x 2 seeds (data/demo_study, shorter schedules); the study
# sets each run's out_root and the comparison's test folder itself.
STUDY_DEMO_DATA = "data/demo_study"
STUDY_DEMO: Overrides = {cls: {k: v for k, v in values.items() if k not in ("out_root", "test_dir")}
                         | dict(dataset=f"{STUDY_DEMO_DATA}/train", epochs=4 if cls is Stage1 else 12)
                         for cls, values in DEMO.items()}


def overrides(sets: Overrides, args_class: type) -> dict[str, Any]:
    """The values an override set replaces for one args class (empty when it names none)."""
    return dict(sets.get(args_class, {}))
