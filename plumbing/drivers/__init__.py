"""What drives the science: the search's run records and files, the training scripts' epoch loop
and shared flags, `--plan` and its costs, campaigns and plots. These import the root's modules
and the base package; the root's science never imports them (only the entry scripts do)."""
