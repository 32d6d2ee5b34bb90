"""A study as a Slurm job array: one task per run (each the same study command with --only ARM:SEED;
tasks sharing a stage-1 run wait on its lock and train it once), a comparison job after them, and a
script that submits both."""
import shlex
import sys
from pathlib import Path

from formats.run_layout import STUDY_STAGE1
from studies.plan import ROOT, StudyRun
from utils.atomic import atomic_write


def slurm_scripts(study: Path, runs: list[StudyRun], argv: list[str], nproc: int, workdir: Path) -> dict[str, str]:
    """A job array (one task per arm run, each `study.py ... --only ARM:SEED`), a comparison job, a submitter.

    Every task starts in `workdir` (where the study command was given), so its relative paths mean
    what they meant there.
    """
    arm_runs = [r.name for r in runs if r.arm != STUDY_STAGE1]
    base = [a for a in argv if a != "--slurm"]
    command = shlex.join([sys.executable, str(ROOT / "study.py"), *base])
    logs = study / "slurm"
    sbatch = [f"#SBATCH --job-name=study-{study.name}", f"#SBATCH --gres=gpu:{nproc}", "#SBATCH --cpus-per-task=8",
              "#SBATCH --time=48:00:00"]
    cd = f"cd {shlex.quote(str(workdir))}"
    array = ["#!/bin/bash", f"# One task per run of study {study}; tasks sharing a stage-1 run train it once.",
             *sbatch, f"#SBATCH --output={logs}/%x_%A_%a.out", f"#SBATCH --array=0-{len(arm_runs) - 1}",
             "set -euo pipefail", cd, f"RUNS=({' '.join(arm_runs)})",
             f'{command} --only "${{RUNS[$SLURM_ARRAY_TASK_ID]}}"', ""]
    comparison = ["#!/bin/bash", "# The comparison once every run is trained (each run is then skipped as done).",
                  *sbatch, f"#SBATCH --output={logs}/%x_%j_compare.out", "set -euo pipefail", cd, command, ""]
    submit = ["#!/bin/bash", f"# Submit study {study}: the job array, then the comparison after it succeeds.",
              "set -euo pipefail", cd, f"array=$(sbatch --parsable {shlex.quote(str(logs / 'array.sbatch'))})",
              f"sbatch --dependency=afterok:${{array%%;*}} {shlex.quote(str(logs / 'compare.sbatch'))}", ""]
    return {"array.sbatch": "\n".join(array), "compare.sbatch": "\n".join(comparison), "submit.sh": "\n".join(submit)}


def write_slurm(study: Path, runs: list[StudyRun], argv: list[str], nproc: int, workdir: Path) -> Path:
    folder = study / "slurm"
    for name, text in slurm_scripts(study, runs, argv, nproc, workdir).items():
        path = atomic_write(folder / name, lambda temp, text=text: temp.write_text(text))
        path.chmod(0o755)
    return folder / "submit.sh"
