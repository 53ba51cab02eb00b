"""Names of the user attrs a trial records about how it ended; import-light, so the progress line
(loaded by every command) can read them without pulling in torch."""

FAIL_REASON_ATTR = "fail_reason"
RETRY_OF_ATTR = "retry_of"  # on a re-enqueued trial: the number of the trial it repeats
PRUNED_REASON_ATTR = "pruned_reason"  # set only when a trial was stopped for its time, not its accuracy
INTERRUPTED = "interrupted (Ctrl-C)"
