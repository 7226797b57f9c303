import os
import sys

# The fixtures (fake_sgb) live beside the tests.
sys.path.insert(0, os.path.dirname(__file__))
