import os
import sys

# Tests run against the in-place build (python setup.py build_ext --inplace).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
