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
