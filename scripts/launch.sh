# Sourced by the run scripts: `run_jobs FLAGS...` hands their jobs to the campaign runner
# (scripts/campaign_cli.py; campaign.py alone builds the python / torchrun command of a job), with
# these flags from the environment:
#   NPROC=k          each search and retrain on k GPUs (torchrun; default 1)
#   GPUS="0 1 2 3"   one job per listed GPU at a time (CUDA_VISIBLE_DEVICES)
#   JOBS=N           a machine without GPUs: N processes side by side
#   EXECUTOR=slurm   SLURM job arrays through submitit: PARTITION, TIME (minutes), CPUS, MEM,
#                    ACCOUNT, QOS (EXECUTOR=submitit_local: the same path as local processes)
#   CKPT             the searches' run directories (default ckpt)
#   CAMPAIGN         campaign.json and the jobs' logs (default $CKPT/campaign)
#   SEARCH_ARGS, RETRAIN_ARGS   more train_search.py / train.py flags for every search / retrain
#   DRY_RUN=1        print the jobs and their commands, run nothing

# env_flags VAR:flag ...: append `--flag "$VAR"` to the caller's array `flags` for each VAR set.
env_flags() {
    local pair name
    for pair in "$@"; do
        name=${pair%%:*}
        if [ -n "${!name:-}" ]; then
            flags+=("--${pair#*:}" "${!name}")
        fi
    done
}

run_jobs() {
    local flags=("$@" --nproc "${NPROC:-1}")
    env_flags GPUS:gpus JOBS:jobs EXECUTOR:executor PARTITION:partition TIME:time CPUS:cpus_per_task MEM:mem \
        ACCOUNT:account QOS:qos CKPT:ckpt CAMPAIGN:campaign SEARCH_ARGS:search_args RETRAIN_ARGS:retrain_args
    if [ -n "${DRY_RUN:-}" ]; then
        flags+=(--dry_run)
    fi
    python scripts/campaign_cli.py "${flags[@]}"
}
