"""Catalog text in five languages, generated from templates and small vocabularies.

The text is informative but noisy on purpose: material words are sometimes missing, sometimes
misleading ("glass-look plastic"); quantities ("pack of 4") and product nouns ("tote bag") appear as
in a real catalog. The vendor's own packaging is never an input here, so it cannot leak into text.
"""

from __future__ import annotations

import numpy as np

LOCALES: tuple[str, ...] = ("en_US", "de_DE", "fr_FR", "es_ES", "ja_JP")

# Product kinds: noun per locale (en, de, fr, es, ja).
NOUNS: dict[str, tuple[str, str, str, str, str]] = {
    "mug": ("mug", "Tasse", "mug", "taza", "マグカップ"),
    "tumbler": ("drinking glass", "Trinkglas", "verre à boire", "vaso", "タンブラー"),
    "vase": ("vase", "Vase", "vase", "jarrón", "花瓶"),
    "plate": ("dinner plate", "Speiseteller", "assiette plate", "plato llano", "プレート皿"),
    "wine_glass": ("wine glass", "Weinglas", "verre à vin", "copa de vino", "ワイングラス"),
    "frame": ("picture frame", "Bilderrahmen", "cadre photo", "marco de fotos", "フォトフレーム"),
    "bowl": ("bowl", "Schüssel", "bol", "cuenco", "ボウル"),
    "perfume": ("perfume bottle", "Parfümflakon", "flacon de parfum", "frasco de perfume", "香水ボトル"),
    "lamp": ("desk lamp", "Schreibtischlampe", "lampe de bureau", "lámpara de escritorio", "デスクライト"),
    "headphones": ("headphones", "Kopfhörer", "casque audio", "auriculares", "ヘッドホン"),
    "charger": ("USB charger", "USB-Ladegerät", "chargeur USB", "cargador USB", "USB充電器"),
    "speaker": ("bluetooth speaker", "Bluetooth-Lautsprecher", "enceinte bluetooth", "altavoz bluetooth", "ブルートゥーススピーカー"),
    "batteries": ("AA batteries", "AA-Batterien", "piles AA", "pilas AA", "単3電池"),
    "tshirt": ("t-shirt", "T-Shirt", "t-shirt", "camiseta", "Tシャツ"),
    "towel": ("bath towel", "Badetuch", "serviette de bain", "toalla de baño", "バスタオル"),
    "socks": ("socks", "Socken", "chaussettes", "calcetines", "靴下"),
    "tote": ("tote bag", "Tragetasche", "sac cabas", "bolso tote", "トートバッグ"),
    "notebook": ("notebook", "Notizbuch", "carnet", "cuaderno", "ノート"),
    "book": ("paperback book", "Taschenbuch", "livre de poche", "libro de bolsillo", "文庫本"),
    "pens": ("ballpoint pens", "Kugelschreiber", "stylos à bille", "bolígrafos", "ボールペン"),
    "phone_case": ("phone case", "Handyhülle", "coque de téléphone", "funda de móvil", "スマホケース"),
    "container": ("food container", "Frischhaltedose", "boîte de conservation", "recipiente hermético", "保存容器"),
    "toy": ("toy figure", "Spielfigur", "figurine", "figura de juguete", "フィギュア"),
    "bottle": ("water bottle", "Trinkflasche", "gourde", "botella de agua", "水筒"),
    "cutting_board": ("cutting board", "Schneidebrett", "planche à découper", "tabla de cortar", "まな板"),
}

MATERIAL_WORDS: dict[str, tuple[str, str, str, str, str]] = {
    "glass": ("glass", "Glas", "en verre", "de vidrio", "ガラス製"),
    "ceramic": ("ceramic", "Keramik", "en céramique", "de cerámica", "陶器"),
    "electronics": ("wireless", "kabellos", "sans fil", "inalámbrico", "ワイヤレス"),
    "fabric": ("cotton", "Baumwoll", "en coton", "de algodón", "綿"),
    "plastic": ("plastic", "Kunststoff", "en plastique", "de plástico", "プラスチック製"),
    "paper": ("paper", "Papier", "en papier", "de papel", "紙製"),
    "metal": ("stainless steel", "Edelstahl", "en acier inoxydable", "de acero inoxidable", "ステンレス製"),
    "wood": ("wooden", "Holz", "en bois", "de madera", "木製"),
}

# Misleading look-alike words: a plastic item described with the look of a fragile material.
LOOKALIKE_WORDS: dict[str, tuple[str, str, str, str, str]] = {
    "glass": ("glass-look", "Glasoptik", "effet verre", "efecto cristal", "ガラス風"),
    "ceramic": ("ceramic-style", "Keramik-Optik", "style céramique", "estilo cerámica", "陶器風"),
}

FRAGILE_CUE = ("delicate, handle with care", "zerbrechlich, mit Sorgfalt behandeln", "fragile, à manipuler avec soin",
               "frágil, manipular con cuidado", "壊れやすいので取り扱い注意")
STURDY_CUE = ("shatterproof and durable", "bruchsicher und robust", "incassable et résistant", "irrompible y resistente",
              "割れにくく丈夫")
DISHWASHER = ("dishwasher safe", "spülmaschinenfest", "va au lave-vaisselle", "apto para lavavajillas", "食洗機対応")
WASHABLE = ("machine washable", "maschinenwaschbar", "lavable en machine", "lavable a máquina", "洗濯機で洗えます")
BATTERY = ("long battery life", "lange Akkulaufzeit", "longue autonomie", "batería de larga duración", "長時間バッテリー")

COLORS: tuple[tuple[str, str, str, str, str], ...] = (
    ("white", "weiß", "blanc", "blanco", "ホワイト"),
    ("black", "schwarz", "noir", "negro", "ブラック"),
    ("red", "rot", "rouge", "rojo", "レッド"),
    ("blue", "blau", "bleu", "azul", "ブルー"),
    ("green", "grün", "vert", "verde", "グリーン"),
    ("yellow", "gelb", "jaune", "amarillo", "イエロー"),
    ("grey", "grau", "gris", "gris", "グレー"),
    ("pink", "rosa", "rose", "rosa", "ピンク"),
)
# RGB of each colour above, used by the renderer so image colour agrees with the catalog.
COLOR_RGB: tuple[tuple[int, int, int], ...] = (
    (235, 235, 230), (35, 35, 40), (200, 40, 40), (40, 80, 190), (50, 150, 70), (230, 200, 40), (130, 130, 135),
    (230, 140, 170),
)

ADJECTIVES: tuple[tuple[str, str, str, str, str], ...] = (
    ("premium", "hochwertige", "premium", "premium", "高級"),
    ("elegant", "elegante", "élégant", "elegante", "エレガントな"),
    ("modern", "moderne", "moderne", "moderno", "モダンな"),
    ("classic", "klassische", "classique", "clásico", "クラシックな"),
    ("compact", "kompakte", "compact", "compacto", "コンパクトな"),
    ("handmade", "handgemachte", "fait main", "hecho a mano", "ハンドメイドの"),
    ("everyday", "alltägliche", "quotidien", "cotidiano", "毎日使える"),
)

PACK_OF = ("Pack of {n}", "{n}er-Pack", "Lot de {n}", "Paquete de {n}", "{n}個セット")
SIZE_LINE = ("Measures {l} x {w} x {h} cm", "Maße: {l} x {w} x {h} cm", "Dimensions : {l} x {w} x {h} cm",
             "Medidas: {l} x {w} x {h} cm", "サイズ：{l}×{w}×{h}cm")
WEIGHT_LINE = ("Weighs {g} g", "Gewicht: {g} g", "Poids : {g} g", "Peso: {g} g", "重さ：{g}g")
GIFT = ("Perfect as a gift", "Ideal als Geschenk", "Idéal comme cadeau", "Ideal para regalar", "ギフトに最適")
QUALITY = ("Quality you can trust", "Qualität, der Sie vertrauen können", "Une qualité de confiance",
           "Calidad en la que confiar", "安心の品質")
USE_HOME = ("Great for home and office", "Ideal für Zuhause und Büro", "Parfait pour la maison et le bureau",
            "Perfecto para casa y oficina", "家庭やオフィスに")
MADE_OF = ("Made of {m}", "Aus {m}", "Fabriqué {m}", "Fabricado {m}", "素材：{m}")
SATISFACTION = ("Satisfaction guaranteed", "Zufriedenheit garantiert", "Satisfaction garantie", "Satisfacción garantizada",
                "満足保証")

BRAND_SYLLABLES = ("ko", "ra", "mi", "zen", "lu", "ta", "vo", "ni", "sa", "pex", "dor", "qui", "bel", "ark", "om")


def brand_name(rng: np.random.Generator) -> str:
    """A pronounceable made-up brand, the same in every locale (brands are not translated)."""
    n = int(rng.integers(2, 4))
    return "".join(rng.choice(BRAND_SYLLABLES, size=n)).capitalize()


def catalog_text(kind: str, material: str, units: int, color: int, brand: str, dims_mm: tuple[float, float, float],
                 weight_g: float, locale: str, rng: np.random.Generator) -> tuple[str, str, list[str]]:
    """(title, description, bullet points) for one product in one locale.

    Only catalog-visible facts are parameters: the vendor's packaging is not, by construction.
    """
    li = LOCALES.index(locale)
    ja = locale == "ja_JP"
    sep = "" if ja else " "
    noun = NOUNS[kind][li]
    adjective = ADJECTIVES[int(rng.integers(len(ADJECTIVES)))][li]
    color_word = COLORS[color][li]

    # The material word is the strongest text cue, so it is made unreliable: often absent, and
    # plastic items are sometimes sold on the look of glass or ceramic.
    u = rng.random()
    if material == "plastic" and u < 0.2:
        material_word = LOOKALIKE_WORDS["glass" if rng.random() < 0.5 else "ceramic"][li]
    elif u < 0.35:
        material_word = ""
    else:
        material_word = MATERIAL_WORDS[material][li]

    title_parts = [brand, adjective if rng.random() < 0.5 else "", material_word, noun]
    title = sep.join(p for p in title_parts if p) + (f", {color_word}" if not ja else f" {color_word}")
    if units > 1 and rng.random() < 0.85:
        title += ("、" if ja else ", ") + PACK_OF[li].format(n=units)

    l_cm, w_cm, h_cm = (round(d / 10, 1) for d in dims_mm)
    sentences = [SIZE_LINE[li].format(l=l_cm, w=w_cm, h=h_cm)]
    if rng.random() < 0.5:
        sentences.append(WEIGHT_LINE[li].format(g=int(round(weight_g))))
    if material_word == MATERIAL_WORDS[material][li] and material != "electronics" and rng.random() < 0.6:
        sentences.append(MADE_OF[li].format(m=material_word))
    pool = [GIFT[li], QUALITY[li], USE_HOME[li], SATISFACTION[li]]
    if material in ("glass", "ceramic") and rng.random() < 0.4:
        pool.append(FRAGILE_CUE[li])
    if material in ("plastic", "metal", "wood") and rng.random() < 0.4:
        pool.append(STURDY_CUE[li])
    if material in ("glass", "ceramic", "plastic", "metal") and kind in ("mug", "tumbler", "plate", "bowl", "wine_glass",
                                                                          "container", "bottle"):
        pool.append(DISHWASHER[li])
    if material == "fabric":
        pool.append(WASHABLE[li])
    if material == "electronics":
        pool.append(BATTERY[li])
    order = rng.permutation(len(pool))
    n_bullets = int(rng.integers(0, min(5, len(pool)) + 1))
    bullets = [pool[i] for i in order[:n_bullets]]
    sentences += [pool[i] for i in order[n_bullets:n_bullets + 2]]
    end = "。" if ja else ". "
    description = end.join(sentences) + end.strip()
    return title, description, bullets
