"""The phase-3 suites as a package: tests/phase1 has a test_faults_under_load.py too, and without
a package two test modules of one basename cannot be collected in one pytest run."""
