"""How a preparation pass says it has nothing to do with a graph it looked at."""


class NotApplicable(Exception):
    """The pass does not apply to this graph, for the reason given (reported; the graph stays as it was).

    Any other exception from a pass is a failure: the build stops with an
    error naming the pass, never a silent skip.
    """
