"""Test backends (emulators) started and stopped by the test run itself."""
