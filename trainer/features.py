"""Every feature key of the pipeline, defined once.

Raw features are what `components.example_gen` writes into tf.Examples; transformed features are what
`trainer.preprocessing.preprocessing_fn` emits. Model, metrics and serving code refer to these constants only.

Raw interaction example (splits `train` and `eval`), one per (user, item, label):
  user_id      bytes      [1]
  item_id      bytes      [1]    the target (label 1) or a sampled negative (label 0)
  history      bytes      [<=N]  the user's last N item ids before this interaction, oldest first
  timestamp    int64      [1]    unix seconds or sequence position
  label        float      [1]    1.0 positive, 0.0 sampled negative (or, from the service's logs, shown and
                                 not taken)
  slot         int64      [0|1]  the position (0 = first) the item was displayed at, for examples from the
                                 service's logs only (absent otherwise)
  + `item_id`'s brand, categories and price (EXAMPLE_ITEM_FEATURES); its title and text
    (CATALOG_ONLY_FEATURES) in the eval split only

Raw item features (also the whole of a catalog example):
  item_id, title, text, brand  bytes [1]  (`text` is what the BERT tower reads; brand may be "")
  categories                   bytes [0..]
  price                        float [1]  (0.0 when unknown)
A catalog example also carries (outside the schema: no interaction example has it)
  negative_ratings             int64 [0|1]  interactions with the item rated below ExampleGen's threshold
"""

# --- raw: interactions ---------------------------------------------------------------------------
USER_ID = "user_id"
ITEM_ID = "item_id"
HISTORY = "history"
TIMESTAMP = "timestamp"
LABEL = "label"
SLOT = "slot"

# --- raw: item catalog ---------------------------------------------------------------------------
TITLE = "title"
TEXT = "text"
BRAND = "brand"
CATEGORIES = "categories"
PRICE = "price"

ITEM_FEATURES = (ITEM_ID, TITLE, TEXT, BRAND, CATEGORIES, PRICE)
# The item was seen and not liked this many times: with no positive, it is known, not new (trainer/blend.py).
NEGATIVE_RATINGS = "negative_ratings"
# Item features a train example carries: what Transform's vocabularies and the per-example candidate
# features (BRAND_INDEX, CATEGORY_INDEX, PRICE_Z) need. The free text stays in the catalog: the Trainer
# encodes it once per catalog item (TextVectorCache, keyed by ITEM_ID), so Transform tokenizes no train
# example's text (their INPUT_IDS are [CLS] [SEP] only). Eval examples keep title and text: the Evaluator
# also scores them with the last blessed model, whose catalog may lack the item — it scores it by its text.
EXAMPLE_ITEM_FEATURES = (ITEM_ID, BRAND, CATEGORIES, PRICE)
CATALOG_ONLY_FEATURES = tuple(f for f in ITEM_FEATURES if f not in EXAMPLE_ITEM_FEATURES)
INTERACTION_FEATURES = (USER_ID, ITEM_ID, HISTORY, TIMESTAMP, LABEL, SLOT)

# --- transformed --------------------------------------------------------------------------------
USER_INDEX = "user_index"  # int64 [B]; vocabulary index, OOV bucket = user vocab size
ITEM_INDEX = "item_index"  # int64 [B]; vocabulary over train items, OOV bucket = item vocab size
HISTORY_INDEX = "history_index"  # int64 [B, HISTORY_LENGTH]; item indices, -1 = padding (left-padded)
INPUT_IDS = "input_ids"  # int64 [B, MAX_TOKENS]; WordPiece ids with [CLS] ... [SEP], 0-padded
INPUT_MASK = "input_mask"  # int64 [B, MAX_TOKENS]; 1 for real tokens
BRAND_INDEX = "brand_index"  # int64 [B]
CATEGORY_INDEX = "category_index"  # int64 [B, MAX_CATEGORIES]; -1 = padding
PRICE_Z = "price_z"  # float32 [B]; z-score of log1p(price)
ITEM_LOG_PROB = "item_log_prob"  # float32 [B]; log of the item's share of train interactions (logQ)
ITEM_IS_TAIL = "item_is_tail"  # int64 [B]; 1 when the item is outside the head (see HEAD_SHARE)
# int64 [B]; 0 = not a logged display (dataset examples, and always at serving), 1 + slot for a logged one
# (slots past MAX_POSITION share the last bucket). The ranking head learns a position bias from it in
# training only, so serving scores are position-free (the "shallow tower" of position-bias modelling).
POSITION_BUCKET = "position_bucket"
# LABEL passes through unchanged. ITEM_ID ([B] bytes) and HISTORY ([B, HISTORY_LENGTH] bytes, left-padded
# with b"") pass through as raw strings too: the model keys its cached catalog text vectors by item id.

# --- vocabulary file names inside the transform graph ---------------------------------------------
USER_VOCAB = "user_id"
ITEM_VOCAB = "item_id"  # ordered by train frequency, with counts (store_frequency=True)
BRAND_VOCAB = "brand"
CATEGORY_VOCAB = "categories"

# --- sizes ---------------------------------------------------------------------------------------
HISTORY_LENGTH = 20
MAX_TOKENS = 64
MAX_CATEGORIES = 4
# Head = the most popular items that together hold this share of training interactions.
HEAD_SHARE = 0.8
MAX_POSITION = 20  # logged slots 0 .. MAX_POSITION - 1 get their own position bucket

# --- custom_config keys shared between the pipeline and the user code -----------------------------
BERT_VOCAB_CONFIG = "bert_vocab"  # Transform: path of the WordPiece vocab.txt
CATALOG_FILES_CONFIG = "catalog_files"  # Trainer: file patterns of the raw catalog examples
# Trainer (and `make refresh`): the folder (or gs:// path) of the frozen-BERT encoding cache shared across
# runs (trainer/encoding_cache.py); "" = no cache
ENCODING_CACHE_CONFIG = "encoding_cache"

# --- outputs of the serving signatures ------------------------------------------------------------
# serving_default (what the Evaluator reads)
SCORE = "score"  # float [B]: ranking head probability
TOP_K_IDS = "top_k_ids"  # bytes [B, K]: retrieval top-K over the catalog, history excluded
TOP_K_SCORES = "top_k_scores"  # float [B, K]
TOP_K_IS_TAIL = "top_k_is_tail"  # int64 [B, K]
NUM_TAIL_ITEMS = "num_tail_items"  # int64 [B]: the catalog's tail size (for TailCoverage@K)

# --- serving signatures: names, inputs and outputs (servers and clients import these) -------------
SERVING_DEFAULT_SIGNATURE = "serving_default"
TRANSFORM_FEATURES_SIGNATURE = "transform_features"
RECOMMEND_SIGNATURE = "recommend"
RANK_SIGNATURE = "rank"
ITEM_EMBEDDINGS_SIGNATURE = "item_embeddings"
# serving_default / transform_features input: [B] serialized raw tf.Examples
EXAMPLES = "examples"
# recommend inputs: USER_ID [B] string, HISTORY [B, H] string ("" padding), and these scalars
K = "k"  # int32: list length (clamped to the catalog size)
MMR_LAMBDA = "mmr_lambda"  # float in [0, 1]: weight of text dissimilarity (MMR); 0 = off
XQUAD_LAMBDA = "xquad_lambda"  # float in [0, 1]: weight of head/tail coverage (xQuAD); 0 = off
# float >= 0, in units of the towers' cosine: added to the score of every new item (IS_NEW: no training
# positive, never seen), e.g. for a launch; 0 = the trained score (which holds the Trainer's own cold offset)
NEW_ITEM_BOOST = "new_item_boost"
# int32, 0 or 1: 1 keeps the sent history rankable (RecBole's full-catalog protocol, as the text-based
# sequential recommenders report it); 0 = history items are never returned (every client's default)
KEEP_HISTORY = "keep_history"
# recommend item filters, [B, X] string each ("" padding; a row of only "" or width 0 restricts nothing). They
# mask catalog items before top-k and re-ranking, so a list stays full while enough items pass.
EXCLUDE_IDS = "exclude_ids"  # these items are never returned (unknown ids are ignored)
# include-only: just these items may be returned (e.g. the in-stock set); a row of only unknown ids lets no
# item pass, so that user's list is all padding
ALLOWED_IDS = "allowed_ids"
# CATEGORIES (the raw feature's name): include-only, an item passes if it has at least one of the row's
# categories; BRANDS: include-only, an item passes if its brand is one of the row's brands. Raw strings, as
# in the catalog; an item without a brand passes no brand filter.
BRANDS = "brands"
# filter input → the most values a row may have, padding included (more is INVALID_ARGUMENT naming both)
FILTER_MAX_WIDTH = {EXCLUDE_IDS: 1_000, ALLOWED_IDS: 10_000, CATEGORIES: 100, BRANDS: 100}
# rank inputs: USER_ID, HISTORY, ITEM_IDS [B, C] string ("" padding); item_embeddings input: ITEM_IDS [N]
ITEM_IDS = "item_ids"  # also the recommend output [B, k] string ("" = padding when too few items)
SCORES = "scores"  # recommend: float [B, k] retrieval score; rank: float [B, C] ranking-head probability
IS_TAIL = "is_tail"  # recommend: int64 [B, k]
EMBEDDINGS = "embeddings"  # item_embeddings: float [N, D] candidate-tower vectors
FOUND = "found"  # item_embeddings: bool [N], false = not in the catalog (the shared OOV vector is returned)
# recommend's explanation of each slot: string [B, k] each, slot by slot with ITEM_IDS ("" in padding slots).
# BECAUSE: the user's history item that supports the recommended item most, among the history the query tower
# reads (the last HISTORY_LENGTH sent) that is in the catalog: the largest pooling weight × cosine of the two
# items' candidate vectors (the `item_embeddings` vectors; the catalog's own notion of similar items). Pooling
# weight: the query tower's learned softmax weight of the slot with "position" pooling; equal with "mean", and
# with "attention" (whose weights depend on the whole sequence). "" when no history item is in the catalog.
# With keep_history 1, a history item recommended again is compared with itself like any other (cosine 1).
BECAUSE = "because"
# REASON: one code per slot, the first of REASONS that holds.
REASON = "reason"
REASON_NEW_ITEM = "new_item"  # the item is new (IS_NEW: out of the item vocabulary, known by its text)
REASON_TAIL_DISCOVERY = "tail_discovery"  # a tail item (IS_TAIL), with a BECAUSE
REASON_SIMILAR_TO = "similar_to"  # a head item similar to its BECAUSE
# no BECAUSE (no history item in the catalog): ranked by what needs no history (popularity, user embedding)
REASON_POPULAR = "popular"
REASONS = (REASON_NEW_ITEM, REASON_TAIL_DISCOVERY, REASON_SIMILAR_TO, REASON_POPULAR)  # in precedence order

# --- catalog metadata, written into every exported model folder --------------------------------------
# <model dir>/ASSETS_EXTRA_DIR/CATALOG_METADATA_FILE: one JSON object per catalog item, in the order of the
# model's catalog, so that the titles a service shows come from the model version that answered. TF Serving
# ignores ASSETS_EXTRA_DIR (apart from its warm-up file) and the Pusher copies the whole folder.
ASSETS_EXTRA_DIR = "assets.extra"
CATALOG_METADATA_FILE = "catalog.jsonl"
# <model dir>/ASSETS_EXTRA_DIR/BLEND_SUMMARY_FILE: the served score's mix the Trainer chose (blend.py).
BLEND_SUMMARY_FILE = "blend.json"
# <model dir>/ASSETS_EXTRA_DIR/REFRESH_KIT_DIR: what a catalog refresh needs to re-encode items with this
# model's towers, without retraining (trainer/refresh_kit.py); it travels with every pushed version.
REFRESH_KIT_DIR = "refresh"
# bool: the item had no positive interaction in the analyzed (train) split, so it is out of the item
# vocabulary (ITEM_INDEX = the OOV bucket): the model knows it by text, brand, categories and price only;
# and no NEGATIVE_RATINGS either (an item rated only below the threshold is known and not liked, not new).
IS_NEW = "is_new"
# The fields: ITEM_ID, TITLE, BRAND (str) and CATEGORIES (list of str) as in the raw catalog, IS_TAIL (bool,
# as `recommend` flags the item) and IS_NEW.
CATALOG_METADATA_FIELDS = (ITEM_ID, TITLE, BRAND, CATEGORIES, IS_TAIL, IS_NEW)
