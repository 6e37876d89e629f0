"""Scenarios that check themselves.

- `sections`: the schema of a scenario's `tests:` and `expect:` sections (validated with the rest
  of the scenario, every problem at once) and the models they become;
- `expect`: the small grammar of live expectations and the state machine that judges them;
- `runner`: runs `tests:` offline, the gears in-process on memory wires (`fluxmix scenario test`);
- `report`: text, JSON and JUnit XML for a test run.
"""
