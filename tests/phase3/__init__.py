"""The phase-3 suites as a package: its modules import each other
(test_soak from chaos) and tests/phase1 has modules of the same basenames."""
