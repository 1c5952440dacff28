"""Generated ComfyUI workflows in batch queues: previews, A/B tests, XY grids and block ablation, on one server or
many (issue 9). Host-free: it speaks ComfyUI's HTTP API, it never imports ComfyUI.

The seam between planning and running is :mod:`lorawb_core.batch.work`: planners turn a job spec into a
:class:`~lorawb_core.batch.work.BatchPlan` of :class:`~lorawb_core.batch.work.WorkItem` (one API-format prompt each);
the queue runs the items on servers and hands back :class:`~lorawb_core.batch.work.ItemResult`; finishers turn the
results into previews, grids and ablation reports.
"""
