"""Scoring and reporting: one scoring interface for single- and multi-label predictions with the headline metric
list and number format (scoring), paired statistics (stats), `hf-medtl compare`
(compare), report.json / report.md (report, multilabel) and the figures (plots)."""
