"""Applying trained runs to new scans: ``ichseq predict`` (predict.py), its saliency maps and figure."""
