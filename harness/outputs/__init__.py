"""Output sinks: results.json, JUnit, report, SigMF, history."""
