"""The daily cycle: one idempotent retrain-gate-publish run for a day (``tastemaker daily``).

``run_day(ws, D)`` (the CLI replays a range ``--from D1 --to D2`` one day after another):

1. **ingest** the raw objects that arrived up to ``D`` (later partitions wait for their day);
2. **features** as of the end of the lake (point-in-time; the online store is refreshed),
   incremental from the previous day's carried state (a full rebuild when it does not match);
3. **train** a two-tower challenger (from scratch, or with ``warm_start`` from the champion's
   weights, :mod:`training.warm_start`);
4. **evaluate** it against the baselines on the fresh holdout (the last ``test_days``);
4b. with ``ranker``: the two-tower trains without the refit on the validation week, and
   the **ranker** (:mod:`training.ranker`) is fitted on that week's logged slates against it
   (so its retrieval scores there are out of sample), then "retrieval + ranker" is gated
   against "retrieval alone" of the same run with the same rules; the winner of the two is
   the day's challenger (both are registered, the other one ``rejected``);
5. **gate** the challenger against the champion on the same holdout (:mod:`evaluation.gate`);
6. **export + publish** its bundle only when the gate promotes it (with ``ranker.ubj`` only
   when the challenger is "retrieval + ranker"); otherwise the champion's bundle keeps serving
   and the registry records the challenger as ``rejected``;
7. **engagement** (CTR, stream-through, follow rate, 7/14-day churn by segment) from the lake,
   the **regression alarm** for ``D``, plots, and a summary in ``daily/<D>/``.

A day that finished is not run again (its ``daily/<D>/summary.json`` is returned instead), so
re-running a date changes nothing. A failing step raises :class:`DailyStepError` naming the
step; nothing is published before step 6, so the current bundle keeps serving.

Modules, in the order a day runs them: :mod:`jobs.daily.config` (the day's configuration),
:mod:`jobs.daily.steps` (``run_day``), :mod:`jobs.daily.publish` (register, gate, publish;
shared with the demo), :mod:`jobs.daily.report` (plots and the Markdown summary).
"""

from jobs.daily.config import DailyConfig, DailyStepError, day_dir
from jobs.daily.publish import gate_and_publish
from jobs.daily.steps import run_day

__all__ = ["DailyConfig", "DailyStepError", "day_dir", "gate_and_publish", "run_day"]
