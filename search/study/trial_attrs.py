"""Names of the user attrs a trial records about how it ended; import-light, so the progress line
(loaded by every command) can read them without pulling in torch."""

FAIL_REASON_ATTR = "fail_reason"
# on a trial failed by a full disk or a read-only folder: the one line naming the path; the run stops at it
WRITE_FAULT_ATTR = "write_fault"
RETRY_OF_ATTR = "retry_of"  # on a re-enqueued trial: the number of the trial it repeats
PRUNED_REASON_ATTR = "pruned_reason"  # set only when a trial was stopped for its time, not its accuracy
INTERRUPTED = "interrupted (Ctrl-C)"
PROCESS_LOST_ATTR = "process_lost"  # True on a trial failed because the process running it died (OOM kill, SIGKILL)
# the machine, and the process on it, that runs the trial (its driver until a worker starts it)
HOSTNAME_ATTR = "hostname"
PID_ATTR = "pid"
EPOCHS_ATTR = "epochs"  # the epoch budget the trial trained with
IMAGES_TRAINED_ATTR = "images_trained"  # training images the trial has gone through, over all its rungs: its cost
REFERENCE_ATTR = "reference"  # on a trial that trains one of the space's references: its name
RUNG_ATTR = "rung"  # with --pruner rungs: the rung the trial trains or last trained, as "<rows> rows x <epochs> epochs"
# counted FLOPs of one image's forward pass (search.train.cost): with images/s, the pace
FORWARD_FLOPS_ATTR = "forward_flops"
