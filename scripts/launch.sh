# Sourced by the run scripts: sets the array `launch` that starts a Python script on NPROC
# processes (torchrun, one per GPU) or as one process; DRY_RUN=1 makes it print the command.
NPROC=${NPROC:-1}
if [ "$NPROC" -gt 1 ]; then
    launch=(torchrun --standalone --nproc_per_node "$NPROC")
else
    launch=(python)
fi
if [ -n "${DRY_RUN:-}" ]; then
    launch=(echo "${launch[@]}")
fi
# The campaign runner's flags (campaign.py) from the environment: GPUS="0 1 2 3" runs one job per
# listed GPU at a time, JOBS=N runs N CPU processes side by side, EXECUTOR=slurm submits SLURM job
# arrays through submitit (PARTITION, TIME in minutes, CPUS, MEM, ACCOUNT, QOS), NPROC GPUs per job.
where=(--nproc "$NPROC")
for pair in GPUS:gpus JOBS:jobs EXECUTOR:executor PARTITION:partition TIME:time CPUS:cpus_per_task MEM:mem \
            ACCOUNT:account QOS:qos; do
    name=${pair%%:*}
    if [ -n "${!name:-}" ]; then
        where+=("--${pair#*:}" "${!name}")
    fi
done
if [ -n "${DRY_RUN:-}" ]; then
    where+=(--dry_run)
fi
