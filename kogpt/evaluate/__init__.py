"""`python -m kogpt eval`: few-shot evaluation on NSMC, KLUE YNAT and KLUE STS data files.

`data` reads the files, `templates` holds the prompt formats, `fewshot` draws demonstrations and
builds prompts, `scoring` computes label log-likelihoods, `metrics` turns predictions into scores,
`runner` ties them together. The command (`kogpt.cli.evaluate`) and its output
(`kogpt.cli.evalview`) live with the rest of the command line.
"""
