"""The engine: every decision over canonical rows, one transaction each (SPEC 4, 5).

`runs` creates, progresses and cancels runs; `batches` gathers a batched workflow's triggers into one run and
closes it; `planning` plans a step's delivery; `signals` routes signals;
`deliveries` moves a delivery's status; `dispatch` sends one attempt; `feedback` records provider reports;
`inbox` serves in-app receipts; `registry` registers definitions; `reads` answers the API's queries.
"""

from tocsin.engine.runs import cancel_run, create_run, progress_due_runs, progress_run
from tocsin.engine.signals import route_signal

__all__ = ["cancel_run", "create_run", "progress_due_runs", "progress_run", "route_signal"]
