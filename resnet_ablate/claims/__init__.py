"""The papers' claims: reading them from the specs (`spec`, torch-free), their kinds as registered classes
(`kinds`), what they measure on a run (`metrics`), the tests and the family's correction (`stats`), judging them
on run folders (`judge`, which imports no trainer) and the report's Claims section (`section`)."""
