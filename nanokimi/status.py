"""How a run ends, in one vocabulary for the engine, the store, the runner and the app.

A model's training ends COMPLETED, STOPPED (by request, keeping what it measured), DIVERGED (its
loss stopped being finite, or became clearly worse than the untrained model's: train.diverged) or
FAILED (an error; the message says which). A stored run (a
comparison or a grid) goes QUEUED -> RUNNING -> one of those, or INTERRUPTED when the app or the
runner was stopped while it trained.
"""

QUEUED, RUNNING = "queued", "running"
COMPLETED, STOPPED, DIVERGED, FAILED, INTERRUPTED = "completed", "stopped", "diverged", "failed", "interrupted"

ACTIVE = (QUEUED, RUNNING)                                  # a runner will still write to it
FINISHED = (COMPLETED, STOPPED, DIVERGED, FAILED, INTERRUPTED)
ALL = ACTIVE + FINISHED
MEASURED = (COMPLETED, STOPPED, DIVERGED)                   # a model with a results row worth reading
TRAINED_TO_THE_END = (COMPLETED, DIVERGED)                  # a grid run that counts in its arm's statistics
