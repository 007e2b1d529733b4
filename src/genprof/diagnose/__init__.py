"""The diagnose window (collection layer): a kernel trace of a few steps, turned into plain data.

:class:`DiagnoseWindow` attaches to a running :class:`genprof.Profiler` through its listener
seam and stores a :class:`genprof.diagnosis.Diagnosis` in ``run.metadata["diagnosis"]`` when
the run ends. torch is imported only when the window opens.
"""

from genprof.diagnose.window import DEFAULT_WINDOW, METADATA_KEY, DiagnoseWindow, WindowSpec, parse_window

__all__ = ["DEFAULT_WINDOW", "METADATA_KEY", "DiagnoseWindow", "WindowSpec", "parse_window"]
