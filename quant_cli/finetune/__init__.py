"""Fine-tuning a trained sequence model into a trading policy: `qfactory finetune --run RUN --method ppo`.

env.py: the market on the backtest's own book-keeping (next-bar fills, costs, borrow, limits);
ppo.py: the one PPO loop; stage.py: the new run it writes (an ordinary trained run).
"""
