"""The pure clinical core: tumour response under RECIST 1.1, iRECIST, Choi, mChoi, mRECIST, EASL and Chun.

Never imports pydicom, the database, the network or any other ``agent`` package (import-linter contract).

Interface (shared by every criterion module):

* ``model``: frozen dataclasses and enums. Input ``Timeline(context, timepoints, options)``; the baseline is
  ``timeline.baseline_index`` (the latest scan on or before treatment start, docs/criteria.md §1.6), earlier
  scans are history; each ``TimePoint`` holds ``Lesion`` records (``status`` already resolved to the kind's
  default; measurements are ``Decimal``). Output ``CriterionResult`` per criterion, holding one
  ``TimepointAssessment`` per time point (``None`` at the baseline and before it) with the rule, citation,
  reference and figures behind it, the BOR and the PD date; ``Alert``; ``Assessment`` (all results +
  alerts, visit labels and dates).
* ``registry``'s evidence checks (docs/criteria.md §1.8) set aside implausible time points and
  self-contradictory records before any criterion reads them.
* ``parse.timeline_from_dict(data) -> Timeline`` reads the JSON shape of the cases of
  ``tests/data/criteria/vectors.json`` (``ValidationError`` names the field:
  ``timepoints[2].lesions[0].long_axis_mm: must be >= 0``);
  ``parse.assessment_to_dict(assessment) -> dict`` writes the Assessment JSON of DESIGN.md.
* each criterion module exposes ``assess(timeline) -> CriterionResult`` (``choi.assess_choi`` /
  ``choi.assess_mchoi``, ``mrecist.assess_mrecist`` / ``mrecist.assess_easl``, ``morphology.assess`` for
  Chun, ``recist.assess``, ``irecist.assess``); ``table.CRITERIA`` is the registry.
* ``alerts.evaluate(timeline, results: tuple[CriterionResult, ...]) -> Iterable[Alert]`` computes every alert
  of docs/criteria.md §9 from the timeline and the results; it never changes a response.
* ``table.assess_timeline(timeline, criteria=None) -> Assessment`` runs the requested criteria (default
  ``context.criteria``) and then the alert rules.
* ``registry``: lesion registry and tracking helpers of docs/criteria.md §1.3 (baseline targets /
  non-targets, genuinely new lesions, tracking problems), shared by the criteria and the alert rules.
* beside the criteria (docs/criteria.md §13): ``sites.split`` (liver and extrahepatic targets against their
  own baseline and nadir, non-targets by organ), ``markers.assess`` (tumour markers from the timeline's
  ``markers``) and ``metabolic.assess`` (PERCIST 1.0 / EORTC 1999 from the timeline's ``pet``); the
  ``Assessment`` carries them as ``sites``, ``markers`` and ``metabolic`` and the alert rules compare them
  with RECIST 1.1.
* ``recist`` also exposes the reusable rule functions (``target_value``, ``target_sum``, ``nadir``,
  ``target_response``, ``non_target_response``, ``overall_response``, ``pd_test``) used by the other criteria.
"""
