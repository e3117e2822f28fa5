"""aifleet test suite: unit, integration (real servers), faults and security tests."""
