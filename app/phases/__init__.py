"""What :class:`app.compiler.EngineCompiler` does for one model, phase by phase.

:mod:`~app.phases.plan` names the artifact and the record it must match; the reuse decision
itself is :mod:`app.cache.reuse`; :mod:`~app.phases.reuse` takes an engine that verified,
:mod:`~app.phases.build` governs, builds and checks one that did not. Each phase gets the
run's :class:`~app.phases.plan.Step` (runtime, request, logger, key, timings).
"""
