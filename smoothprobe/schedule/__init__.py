"""Learning-rate schedules: ordinary warm-up/decay baselines and the adaptive warm-up."""
