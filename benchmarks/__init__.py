"""Reproducible measurements of the sweep service; ``python -m benchmarks`` writes BENCHMARKS.md.

Sections: model quality per operation against the original question's network and KerasTuner
(same data, same wall-clock budget, one run), training speed, per-trial overhead of sampling
and storage, and worker throughput on PostgreSQL. Everything goes through the public API
(`CampaignConfig`, `Campaign`, the registry), so the figures follow the defaults in force.
"""
