"""Each package's own tests: a twin's tests import only its own framework."""
