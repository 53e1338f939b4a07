"""adptycho: ptychography reconstruction by automatic differentiation in TensorFlow.

Importing the package changes nothing in the importing process (environment, allocator, logging,
random generators); ``adptycho.runtime.configure()`` opts into the settings the command line uses.
"""

__version__ = "0.1.0"
