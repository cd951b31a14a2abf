"""Evaluation of speech codecs against a reference set: metrics, systems under test, the runner and reports."""
