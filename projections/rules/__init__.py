"""User rules (``[[rules]]``): ``spec`` the declaration, ``fold`` the families they feed."""

from projections.rules.fold import RuleFold as RuleFold
from projections.rules.fold import RulesState as RulesState
from projections.rules.spec import Rule as Rule
from projections.rules.spec import check_rules as check_rules
