"""Applying trained runs to new scans: ``predict`` reads a scan (NIfTI or a DICOM series) through
the run's own preprocessing, scores it with every replicate's model and the run's decision rule
(``predict.py``); ``saliency`` computes the Grad-CAM maps of the slices a slice model scores, and
``figure`` draws a scan's slice-score curve with its highest-scoring slices and their maps.
"""
