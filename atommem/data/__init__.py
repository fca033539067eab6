from atommem.data.schema import DataError, Document, Question, Sample, iter_samples, read_samples, write_samples

__all__ = ["DataError", "Document", "Question", "Sample", "iter_samples", "read_samples", "write_samples"]
