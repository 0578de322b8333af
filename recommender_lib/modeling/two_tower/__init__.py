"""Two-tower ("Siamese") rating and retrieval model, Keras 3 on TensorFlow.

* user tower: user feature vector (+ Gaussian noise while training) -> [dense -> batch-norm ->
  GELU -> dropout] x L -> dense -> L2-normalised embedding `u` (the batch-norm and dropout are
  Keras' with a cheaper training pass, `layers`);
* item tower: item feature vector (+ an optional item-id embedding, ids dropped to the OOV
  bucket at random while training and always OOV for titles nobody rated, so features carry the
  signal; off by default, it did not help) -> same blocks -> L2-normalised embedding `v` and a
  scalar ranking bias `b`;
* fusion head on [u, v, |u−v|, u⊙v, baseline] -> residual over the damped-bias baseline
  (μ + b_item + b_user, read off the features) -> rating in stars (clipped to [0.5, 5]);
* auxiliary retrieval loss: in-batch sampled softmax over rated pairs on u·v/τ + b with the
  log-Q correction (in-batch negatives are popularity-sampled), so that u·v/τ + b plus a
  popularity term ranks the catalogue on its own. How the catalogue is ordered for a user —
  the `RankingRule` saved with the model — is chosen on validation NDCG@10 after training
  (`recommender_lib.workflow.train`) and applied by `recommender_lib.engine.ranking.RankingEngine`,
  the engine the API serves with.

Training examples: user features from the ratings before each target (`prefix`), a share of
rows re-featurised as cold users who revealed only their first k <= 10 ratings, item statistics
without the target; early stopping on validation RMSE with the best weights restored.

Modules: `params` (TwoTowerParams), `networks` (towers, head, `compute_loss`, inference),
`dataset` (training examples and tf.data), `fit` (the training loop), `trained`
(TrainedTwoTower: inference, save/load), `ranking_rule` (RankingRule), `layers` (the towers'
batch-norm and dropout) and `optimizer` (FusedAdamW), the two that import TensorFlow/Keras on
import; the others import them inside functions only, so importing those is cheap.
"""
