"""The model's own preprocessing: how prepared records become the batches a model reads.

    framing      a history -> the id matrix a model reads (`Framing`, kept in the model)
    records      batches of serialized records from a prepared directory's shards
    windows      sequences cut into windows of a model's length
    next_item    next-item examples: inputs and labels shifted by one position
    masked_item  masked-item examples: GRec's masking
    candidates   ids drawn besides the true one: training negatives, evaluation candidates
    datasets     the tf.data builders every job trains and evaluates on

Reading a prepared directory (metadata.json, shards, vocabularies, their checks) stays in
`pipelines.inputs`, beside the writer; the models import nothing from `pipelines`.
"""
