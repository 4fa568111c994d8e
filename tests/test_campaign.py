"""The campaign runner (campaign.py, scripts/campaign_cli.py, scripts/run_campaign.sh,
scripts/run_search_spaces.sh, scripts/campaign_status.py) on tiny digits searches and retrains:
JOBS=2 runs two jobs at once and never more, each retrain after its search; a second run skips
everything (run_search_spaces.sh's too); a SIGKILLed campaign resumes its search; a failing job is
reported without stopping the others; submitit's local executor runs the same campaign; DRY_RUN
prints the jobs and the SLURM arrays' headers."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT, run_cli

SEARCH = ("--dataset digits --subset 64 --batch_size 16 --init_channels 4 --layers 3 --steps 2 --epochs 3 "
          "--warmup 1 --prune_interval 1 --report_freq 100 --no_summary")
RETRAIN = ("--dataset digits --epochs 1 --batch_size 64 --init_channels 4 --layers 3 --no_auxiliary --no_cutout "
           "--report_freq 100")


def run_campaign(ckpt, check=True, script="run_campaign.sh", **env):
    """scripts/run_campaign.sh (or `script`) with the tiny settings, its searches and logs under `ckpt`."""
    env = {**os.environ, "CKPT": str(ckpt), "SEARCH_ARGS": SEARCH, "RETRAIN_ARGS": RETRAIN,
           "OMP_NUM_THREADS": "1", "VARIANTS": "s1", **env}
    env.pop("OMP_NUM_THREADS") if env.get("JOBS") else None  # (the runner shares the cores out itself)
    result = subprocess.run(["bash", str(ROOT / "scripts" / script)], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0 or not check, result.stdout + result.stderr
    return result


def manifest(ckpt):
    return {j["name"]: j for j in json.loads((ckpt / "campaign" / "campaign.json").read_text())["jobs"]}


def test_two_jobs_at_a_time_in_order_then_all_skipped(tmp_path):
    ckpt = tmp_path / "ckpt"
    first = run_campaign(ckpt, JOBS="2", SEEDS="0 1")
    jobs = manifest(ckpt)
    assert len(jobs) == 4 and all(j["state"] == "done" for j in jobs.values()), first.stdout
    # At most two at once, and two at once at some point (from the recorded start and end times).
    times = sorted([(j["started"], 1) for j in jobs.values()] + [(j["ended"], -1) for j in jobs.values()],
                   key=lambda t: (t[0], t[1]))
    level, peak = 0, 0
    for _, step in times:
        level += step
        peak = max(peak, level)
    assert peak == 2
    for seed in range(2):
        search, retrain = jobs[f"search-s1-seed{seed}"], jobs[f"retrain-search-s1-seed{seed}"]
        assert retrain["started"] >= search["ended"]
        assert retrain["run_dir"].startswith(search["run_dir"] + "/eval-")
        assert (Path(search["run_dir"]) / "results.json").is_file()
    dirs = sorted(p.name for p in ckpt.iterdir())
    second = run_campaign(ckpt, JOBS="2", SEEDS="0 1")
    assert second.stdout.count(" skipped  ") == 4 and "started" not in second.stdout
    assert sorted(p.name for p in ckpt.iterdir()) == dirs  # nothing new
    status = run_cli("scripts/campaign_status.py", ckpt / "campaign").stdout
    assert status.count("skipped") == 5 and "retrain-search-s1-seed1" in status  # four rows and the count


def test_run_search_spaces_runs_through_the_runner(tmp_path):
    # An S2 search on digits and the retrain of its cell after it; a second call skips both.
    ckpt, env = tmp_path / "ckpt", dict(SPACES="s2", DATASETS="digits", SEEDS="0", STAGE="search eval",
                                        SEARCH_ARGS=SEARCH + " --num_compare 2 --iter_compare 0")
    run_campaign(ckpt, script="run_search_spaces.sh", **env)
    jobs = manifest(ckpt)
    search, retrain = jobs["search-s2_digits-seed0"], jobs["retrain-search-s2_digits-seed0"]
    assert search["state"] == retrain["state"] == "done" and retrain["started"] >= search["ended"]
    assert Path(search["run_dir"]).name.startswith("search-s2_digits-")
    assert retrain["run_dir"].startswith(search["run_dir"] + "/eval-")
    again = run_campaign(ckpt, script="run_search_spaces.sh", **env)
    assert again.stdout.count(" skipped  ") == 2 and "started" not in again.stdout


def test_a_killed_campaign_resumes_and_a_failed_job_does_not_stop_the_others(tmp_path, search_runs):
    # A failing retrain (a corrupt genotype) beside a good one, on two "GPUs": reported, not fatal.
    good, broken = (shutil.copytree(search_runs["restricted"], tmp_path / name) for name in ("good", "broken"))
    for path in (broken / "results_of_7q" / "genotype").iterdir():
        path.write_text("{")
    result = run_cli("scripts/campaign_cli.py", "--stages", "retrain", "--runs", good, broken, "--gpus", "4 7",
                     "--retrain_args", RETRAIN, "--ckpt", tmp_path / "ckpt", check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "1 of 2 jobs did not finish: retrain-broken failed (exit 2, log " in result.stderr
    jobs = manifest(tmp_path / "ckpt")
    assert jobs["retrain-good"]["state"] == "done" and jobs["retrain-broken"]["state"] == "failed"
    assert {tuple(j["devices"]) for j in jobs.values()} == {("4",), ("7",)}
    assert "genotype" in open(jobs["retrain-broken"]["stderr"]).read()

    # A search killed (runner and job, SIGKILL) after its first checkpoints is resumed by a rerun.
    argv = [sys.executable, str(ROOT / "scripts" / "campaign_cli.py"), "--stages", "search", "--variants", "s1",
            "--seeds", "9", "--ckpt", str(tmp_path / "ckpt2"),
            "--search_args", SEARCH.replace("--epochs 3", "--epochs 8")]
    runner = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list((tmp_path / "ckpt2").glob("search-*/results_of_7q/alpha/2.txt")):
        time.sleep(0.1)
    (job,) = manifest(tmp_path / "ckpt2").values()
    for pid in (runner.pid, job["pid"]):
        os.kill(pid, signal.SIGKILL)
    runner.wait()
    (run_dir,) = (tmp_path / "ckpt2").glob("search-*")
    assert (run_dir / "checkpoint.pt").is_file() and not (run_dir / "results.json").exists()
    assert "interrupted" in run_cli("scripts/campaign_status.py", tmp_path / "ckpt2" / "campaign").stdout
    again = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "resumed  search-s1-seed9" in again.stdout, again.stdout + again.stderr
    assert (run_dir / "results.json").is_file() and "resuming" in (run_dir / "log.txt").read_text()
    assert list((tmp_path / "ckpt2").glob("search-*")) == [run_dir]  # the same run, continued


def test_submitit_local_executor_runs_the_same_campaign(tmp_path):
    ckpt = tmp_path / "ckpt"
    run_campaign(ckpt, EXECUTOR="submitit_local", SEEDS="0 1", TIME="10")
    jobs = manifest(ckpt)
    assert len(jobs) == 4 and all(j["state"] == "done" for j in jobs.values())
    for seed in range(2):
        search, retrain = jobs[f"search-s1-seed{seed}"], jobs[f"retrain-search-s1-seed{seed}"]
        assert retrain["started"] >= search["ended"] and search["job_id"] != retrain["job_id"]
        assert "search done" in open(search["stderr"]).read() + open(search["stdout"]).read()
        assert retrain["run_dir"].startswith(search["run_dir"])


def test_dry_run_lists_the_jobs_and_the_slurm_arrays():
    env = dict(os.environ, DRY_RUN="1", SEEDS="0 1 2", STAGES="search retrain select imagenet", EXECUTOR="slurm",
               PARTITION="gpu", TIME="600", CPUS="8", MEM="64G", ACCOUNT="lab", QOS="high", VARIANTS="s1 s1r")
    out = subprocess.run(["bash", str(ROOT / "scripts" / "run_campaign.sh")], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out.count("python train_search.py") == 6 and out.count("python train.py") == 6
    assert "# select (1 GPU after search-s1-seed0, search-s1-seed1" in out
    assert "torchrun --standalone --nproc_per_node 8 train_imagenet.py" in out
    headers = out.split("# sbatch header of the array ")[1:]
    assert [h.split(":")[0] for h in headers] == ["search-s1", "search-s1r", "retrain", "select", "imagenet"]
    for flag in ("--partition=gpu", "--time=600", "--cpus-per-task=8", "--mem=64G", "--account=lab", "--qos=high"):
        assert all(f"#SBATCH {flag}\n" in h for h in headers), flag
    assert "#SBATCH --array=0-2%3\n" in headers[0] and "#SBATCH --gpus-per-node=1\n" in headers[0]
    assert "#SBATCH --array=0-5%6\n" in headers[2] and "#SBATCH --gpus-per-node=8\n" in headers[4]


def test_bad_settings_are_refused_in_one_line(tmp_path):
    for flags, message in ((["--gpus", "0", "--executor", "slurm"], "--gpus is for --executor machine"),
                           (["--gpus", "0 1", "--nproc", "4"], "a job asks for 4 GPUs but --gpus lists 2"),
                           (["--stages", "retrain"], "--stages without search need --runs")):
        result = run_cli("scripts/campaign_cli.py", *flags, check=False)
        assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1
    result = run_cli("scripts/campaign_status.py", tmp_path, check=False)
    assert result.returncode == 2 and "no campaign here" in result.stderr
