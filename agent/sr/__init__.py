"""The SR layer: read measurement reports (``read``, ``context``, ``observations``) and the codes they use.

Never imports the database, the network or the pipeline (import-linter contract): look-ups of referenced
series are injected by the caller (``context.SeriesLookup``).
"""
