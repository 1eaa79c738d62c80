"""The API and the state; the composition root that wires the other packages."""
