"""Tests of the executor port, the job protocol parser and the executors."""
