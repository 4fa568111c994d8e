"""What keeps runs alive and measured, under the science: one-line errors, atomic files,
torchrun and collectives, the non-finite check, timing, the run-directory contract, checkpoints,
out of memory, stops, TensorBoard. Nothing here imports the root's modules or `drivers`."""
