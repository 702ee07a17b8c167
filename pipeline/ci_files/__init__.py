"""ci_files"""
