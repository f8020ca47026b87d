"""sparsetrain.scenarios"""

# challenging-data scenarios (label noise, limited data, imbalance, hard subsets): see apply.py
from sparsetrain.scenarios.apply import active_scenarios, apply_scenarios, describe  # noqa: E402
from sparsetrain.scenarios.base import SCENARIOS, NoisyData, Scenario, ScenarioContext, register_scenario  # noqa: E402
