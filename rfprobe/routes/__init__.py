"""The routes to a receptive field, side by side: the closed form (:mod:`.closed`), exact
propagation (:mod:`.exact`), choosing the input (:mod:`.fit`), both analytic routes as one
:class:`rfprobe.Analysis` (:mod:`.analyze`), the gradient probe (:mod:`.gradient`, the
machinery; :mod:`.probe`, the entry points) and the effective RF (:mod:`.erf`). ``verify``
(:mod:`rfprobe.verify`) compares them.
"""
