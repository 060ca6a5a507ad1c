"""Vocabularies and sentence templates of the demo dataset (all written for curatune).

Kept apart from :mod:`curatune.data.demo` so the generator reads as logic, not lists.
Brand names are invented. Filler sentences never mention a colour, material, size or
price, so the target JSON is exactly what the attribute sentences state.
"""
from __future__ import annotations

from dataclasses import dataclass

KEYS = ("brand", "product", "colour", "size", "material", "price", "currency")

#: Category shares of the training split: deliberately skewed (apparel > 40%).
CATEGORY_WEIGHTS = {
    "apparel": 0.44,
    "electronics": 0.17,
    "home": 0.13,
    "sports": 0.11,
    "beauty": 0.09,
    "toys": 0.06,
}

INSTRUCTIONS = (
    "Extract the product attributes from the description as a JSON object with the keys brand, product, "
    "colour, size, material, price and currency. Use null for anything the description does not mention.",
    "Read the product description and return its attributes as compact JSON (keys: brand, product, colour, "
    "size, material, price, currency). Missing attributes are null.",
    "Turn this product listing into JSON with brand, product, colour, size, material, price and currency. "
    "Write null when an attribute is not given; give the price as a number and the currency as a "
    "three-letter code.",
    "From the following product description, pull out brand, product, colour, size, material, price and "
    "currency as a JSON object. Use null for unknown values.",
)

LETTER_SIZES = ("XS", "S", "M", "L", "XL", "XXL")
LETTER_SIZE_WORDS = {"XS": "extra small", "S": "small", "M": "medium", "L": "large", "XL": "extra large"}


@dataclass(frozen=True)
class Kind:
    """One kind of product: what sizes, materials and colours it plausibly has."""

    name: str
    sizes: tuple[str, ...] | None
    materials: tuple[str, ...] | None
    colours: tuple[str, ...] | None
    price: tuple[float, float]
    size_phrases: tuple[str, ...] | None = None  # None: the category's phrases
    plural: bool = False  # "jeans are", "they come in"


def grammar(plural: bool) -> dict[str, str]:
    """Placeholders the templates use so that plural products ("jeans") read right."""
    if plural:
        return {"It": "They", "is": "are", "comes": "come", "retails": "retail", "sells": "sell", "A": "",
                "a": "", "this": "these"}
    return {"It": "It", "is": "is", "comes": "comes", "retails": "retails", "sells": "sells", "A": "A ",
            "a": "a ", "this": "this"}


APPAREL_COLOURS = ("black", "white", "navy", "olive green", "burgundy", "heather grey", "sand", "mustard yellow",
                   "sky blue", "charcoal", "forest green", "rust orange", "cream", "dusty pink")
ELECTRONICS_COLOURS = ("space grey", "silver", "matte black", "white", "midnight blue", "rose gold", "graphite")
HOME_COLOURS = ("terracotta", "sage green", "cream", "slate grey", "ivory", "natural", "matte black", "ochre",
                "dusty blue", "charcoal")
SPORTS_COLOURS = ("black", "neon yellow", "royal blue", "red", "white", "teal", "orange", "grey")
WAISTS = ("W30 L32", "W32 L32", "W32 L34", "W34 L32", "W34 L34", "W36 L32")
SHOES = ("EU 39", "EU 40", "EU 41", "EU 42", "EU 43", "EU 44", "EU 45", "US 8", "US 9", "US 10", "UK 7", "UK 9")

KINDS: dict[str, tuple[Kind, ...]] = {
    "apparel": (
        Kind("t-shirt", LETTER_SIZES, ("cotton", "organic cotton", "cotton-modal blend", "recycled polyester"),
             APPAREL_COLOURS, (12, 45)),
        Kind("hoodie", LETTER_SIZES, ("cotton fleece", "organic cotton", "polyester fleece"), APPAREL_COLOURS, (35, 90)),
        Kind("rain jacket", LETTER_SIZES, ("recycled nylon", "waterproof polyester", "ripstop nylon"),
             APPAREL_COLOURS, (60, 220)),
        Kind("chinos", WAISTS, ("cotton twill", "stretch cotton"), APPAREL_COLOURS, (40, 95),
             ("Size: {size}.", "Waist and leg: {size}.", "This pair is a {size}."), plural=True),
        Kind("jeans", WAISTS, ("cotton denim", "stretch denim", "organic cotton denim"), APPAREL_COLOURS, (45, 130),
             ("Size: {size}.", "Waist and leg: {size}.", "This pair is a {size}."), plural=True),
        Kind("sweater", LETTER_SIZES, ("merino wool", "lambswool", "cashmere blend"), APPAREL_COLOURS, (55, 180)),
        Kind("shirt", LETTER_SIZES, ("linen", "linen-cotton blend", "cotton poplin"), APPAREL_COLOURS, (35, 90)),
        Kind("summer dress", ("EU 34", "EU 36", "EU 38", "EU 40", "EU 42") + LETTER_SIZES,
             ("viscose", "cotton voile", "linen"), APPAREL_COLOURS, (30, 110)),
        Kind("puffer vest", LETTER_SIZES, ("recycled polyester", "down-filled nylon"), APPAREL_COLOURS, (50, 160)),
        Kind("beanie", ("one size",), ("merino wool", "acrylic knit", "cashmere"), APPAREL_COLOURS, (12, 45),
             ("Sold as one size.", "Size: one size.")),
        Kind("running socks", ("EU 39-42", "EU 43-46"), ("cotton blend", "merino blend", "nylon blend"),
             APPAREL_COLOURS, (9, 25), ("Size: {size}.", "They fit {size}."), plural=True),
        Kind("sneakers", SHOES, ("leather", "suede", "canvas"), APPAREL_COLOURS, (60, 160),
             ("Size: {size}.", "This pair is a {size}.", "Shoe size {size}."), plural=True),
    ),
    "electronics": (
        Kind("laptop", ("13.3-inch", "14-inch", "15.6-inch", "16-inch"), ("aluminium", "recycled aluminium", "plastic"),
             ELECTRONICS_COLOURS, (499, 1899), ("It has a {size} screen.", "Screen size: {size}.", "The display is {size}.")),
        Kind("tablet", ("8.3-inch", "10.9-inch", "11-inch", "12.9-inch"), ("aluminium", "glass and aluminium"),
             ELECTRONICS_COLOURS, (199, 899), ("It has a {size} screen.", "Screen size: {size}.")),
        Kind("monitor", ("24-inch", "27-inch", "32-inch"), ("plastic", "aluminium"), ELECTRONICS_COLOURS, (149, 699),
             ("Screen size: {size}.", "The panel measures {size} across.")),
        Kind("power bank", ("5000 mAh", "10000 mAh", "20000 mAh"), ("plastic", "aluminium"), ELECTRONICS_COLOURS,
             (19, 79), ("Capacity: {size}.", "It stores {size}.")),
        Kind("smartwatch", ("41 mm", "42 mm", "45 mm", "46 mm"), ("aluminium", "stainless steel", "titanium"),
             ELECTRONICS_COLOURS, (99, 449), ("The case measures {size}.", "Case size: {size}.")),
        Kind("USB flash drive", ("64 GB", "128 GB", "256 GB"), ("metal", "plastic"), ELECTRONICS_COLOURS, (9, 49),
             ("Storage: {size}.", "It holds {size}.")),
        Kind("e-reader", ("6-inch", "7-inch"), ("plastic", "recycled plastic"), ELECTRONICS_COLOURS, (89, 249),
             ("It has a {size} screen.", "Screen size: {size}.")),
        Kind("mechanical keyboard", None, ("aluminium", "ABS plastic", "PBT plastic"), ELECTRONICS_COLOURS, (49, 179)),
        Kind("webcam", None, ("plastic",), ELECTRONICS_COLOURS, (29, 149)),
        Kind("wireless earbuds", None, ("plastic", "recycled plastic"), ELECTRONICS_COLOURS, (29, 249), plural=True),
        Kind("bluetooth speaker", None, ("fabric and plastic", "silicone", "aluminium"), ELECTRONICS_COLOURS, (25, 199)),
    ),
    "home": (
        Kind("throw blanket", ("130 x 170 cm", "150 x 200 cm"), ("cotton", "wool", "chenille", "fleece"),
             HOME_COLOURS, (25, 120)),
        Kind("mug", ("350 ml", "400 ml", "12 oz"), ("ceramic", "stoneware", "porcelain", "enamel"), HOME_COLOURS,
             (8, 30), ("It holds {size}.", "Capacity: {size}.")),
        Kind("table lamp", ("30 cm", "45 cm", "60 cm"), ("brass", "ceramic", "oak", "rattan"), HOME_COLOURS, (35, 180),
             ("It stands {size} tall.", "Height: {size}.")),
        Kind("bath towel", ("50 x 100 cm", "70 x 140 cm", "100 x 150 cm"), ("cotton", "Turkish cotton", "bamboo viscose"),
             HOME_COLOURS, (12, 45)),
        Kind("skillet", ("20 cm", "24 cm", "28 cm"), ("cast iron", "carbon steel", "stainless steel"), None, (25, 120),
             ("It measures {size} across.", "Diameter: {size}.")),
        Kind("storage basket", ("30 x 30 cm", "40 x 30 x 25 cm"), ("seagrass", "cotton rope", "rattan", "felt"),
             HOME_COLOURS, (15, 60)),
        Kind("bed sheet set", ("single", "double", "queen", "king"), ("cotton percale", "linen", "cotton sateen",
             "bamboo lyocell"), HOME_COLOURS, (40, 180), ("Bed size: {size}.", "It fits a {size} bed.")),
        Kind("scented candle", ("200 g", "400 g"), ("soy wax", "coconut wax", "beeswax"), HOME_COLOURS, (12, 45),
             ("Net weight: {size}.", "It weighs {size}.")),
        Kind("cutting board", ("30 x 20 cm", "40 x 28 cm"), ("acacia wood", "oak", "bamboo", "walnut"), None, (15, 70)),
        Kind("wall clock", ("30 cm", "40 cm"), ("oak", "metal", "bamboo"), HOME_COLOURS, (20, 90),
             ("The face is {size} wide.", "Diameter: {size}.")),
    ),
    "sports": (
        Kind("yoga mat", ("180 x 60 cm", "183 x 61 cm"), ("TPE", "natural rubber", "cork", "PVC"), SPORTS_COLOURS, (20, 90)),
        Kind("football", ("size 3", "size 4", "size 5"), ("synthetic leather", "PU"), SPORTS_COLOURS, (15, 60),
             ("It is a {size} ball.", "Ball size: {size}.")),
        Kind("dumbbell", ("2 kg", "5 kg", "10 kg"), ("cast iron", "neoprene-coated iron", "rubber-coated steel"),
             SPORTS_COLOURS, (12, 70), ("Each one weighs {size}.", "Weight: {size}.")),
        Kind("running shoes", SHOES, ("mesh", "knit mesh", "synthetic"), SPORTS_COLOURS, (60, 180),
             ("Size: {size}.", "This pair is a {size}.", "Shoe size {size}."), plural=True),
        Kind("cycling helmet", ("S", "M", "L"), ("EPS foam", "polycarbonate"), SPORTS_COLOURS, (40, 160)),
        Kind("water bottle", ("500 ml", "750 ml", "1 L"), ("stainless steel", "Tritan plastic", "aluminium"),
             SPORTS_COLOURS, (10, 45), ("It holds {size}.", "Capacity: {size}.")),
        Kind("tennis racket", ("grip 2", "grip 3", "grip 4"), ("graphite", "aluminium", "carbon fibre"), SPORTS_COLOURS,
             (40, 220), ("It has a {size} handle.", "Handle: {size}.")),
        Kind("resistance bands", ("light", "medium", "heavy"), ("latex", "fabric"), SPORTS_COLOURS, (9, 35),
             ("Resistance level: {size}.", "The set is rated {size}."), plural=True),
        Kind("hiking backpack", ("20 L", "30 L", "45 L"), ("ripstop nylon", "recycled polyester"), SPORTS_COLOURS,
             (45, 220), ("It holds {size}.", "Volume: {size}.")),
        Kind("swim goggles", None, ("silicone", "polycarbonate"), SPORTS_COLOURS, (10, 40), plural=True),
    ),
    "beauty": (
        Kind("face moisturiser", ("30 ml", "50 ml", "1.7 fl oz"), None, None, (12, 65)),
        Kind("shampoo", ("250 ml", "500 ml", "8.5 fl oz"), None, None, (6, 28)),
        Kind("lipstick", ("3.5 g", "4 g"), None, ("ruby red", "nude", "coral", "berry", "rose pink", "deep plum"), (9, 38),
             ("Net weight: {size}.", "Each stick holds {size}.")),
        Kind("sunscreen", ("50 ml", "100 ml", "3.4 fl oz"), None, None, (8, 35)),
        Kind("body lotion", ("200 ml", "400 ml"), None, None, (6, 30)),
        Kind("eau de parfum", ("30 ml", "50 ml", "100 ml", "1.7 fl oz"), None, None, (35, 160)),
        Kind("hair oil", ("50 ml", "100 ml"), None, None, (10, 45)),
        Kind("face serum", ("15 ml", "30 ml", "1 fl oz"), None, None, (15, 85)),
        Kind("nail polish", ("10 ml", "15 ml"), None, ("cherry red", "pastel lilac", "nude", "midnight blue", "coral"),
             (5, 18)),
        Kind("makeup brush set", ("8 pieces", "12 pieces"), ("synthetic bristles", "goat hair"),
             ("rose gold", "black", "white"), (15, 60), ("The set has {size}.", "It comes with {size}.")),
    ),
    "toys": (
        Kind("building blocks set", ("250 pieces", "500 pieces", "1000 pieces"), ("ABS plastic", "recycled plastic",
             "beech wood"), None, (15, 120), ("The set has {size}.", "It comes with {size}.")),
        Kind("plush bear", ("20 cm", "30 cm", "45 cm"), ("plush polyester", "organic cotton"),
             ("honey brown", "cream", "grey", "pink"), (12, 45), ("It is {size} tall.", "Height: {size}.")),
        Kind("wooden puzzle", ("24 pieces", "48 pieces"), ("beech wood", "birch plywood"), None, (9, 35),
             ("It has {size}.", "Pieces: {size}.")),
        Kind("remote control car", ("1:16 scale", "1:24 scale"), ("ABS plastic", "plastic"), ("red", "blue", "green",
             "yellow"), (25, 120), ("It is built at {size}.", "Scale: {size}.")),
        Kind("board game", None, ("cardboard",), None, (15, 60)),
        Kind("doll house", ("60 cm", "80 cm"), ("wood", "MDF"), ("white", "pastel pink", "natural"), (60, 200),
             ("It stands {size} tall.", "Height: {size}.")),
        Kind("kite", ("90 cm", "120 cm"), ("ripstop nylon", "polyester"), ("rainbow", "red", "blue"), (12, 45),
             ("It has a {size} wingspan.", "Wingspan: {size}.")),
        Kind("toy train set", ("35 pieces", "80 pieces"), ("beech wood", "plastic"), None, (25, 110),
             ("The set has {size}.", "It comes with {size}.")),
        Kind("stacking rings", None, ("silicone", "wood"), ("pastel", "rainbow"), (8, 25), plural=True),
        Kind("science kit", None, None, None, (15, 50)),
    ),
}

BRANDS = {
    "apparel": ("Northvale", "Harbor Lane", "Wrenfield", "Cobalt & Pine", "Mistral Outfitters", "Aldercroft",
                "Saltmarsh", "Ivory Thread"),
    "electronics": ("Voltaic", "Lumora", "Zentro", "Quillon Audio", "Brightwave", "Nexaro", "Helixon", "Orbitek"),
    "home": ("Oakhollow", "Ember & Ash", "Casa Verde", "Linden House", "Stonebrook", "Hearthwell", "Maple Row",
             "Tidewell Home"),
    "sports": ("Veloxa", "Summitline", "Trailborn", "Kinetiq", "Stridewell", "Peakform", "Finwater", "Fernhill Athletics"),
    "beauty": ("Aurelle", "Solvik", "Petal & Stone", "Luma Botanics", "Velvetine", "Mirelle", "Clearwater Skin",
               "Rosemoor"),
    "toys": ("Quillo", "Tinker Oak", "Bramblebee", "Little Comet", "Pebble & Pip", "Wunderkit", "Jolly Fern",
             "Starling Toys"),
}

SIZE_PHRASES = {
    "apparel": ("Size: {size}.", "This one is a size {size}.", "Offered here in size {size}.",
                "The listing is for size {size}."),
    "electronics": ("Size: {size}.",),
    "home": ("Dimensions: {size}.", "It measures {size}.", "Size: {size}."),
    "sports": ("Size: {size}.", "This one is a size {size}."),
    "beauty": ("Contents: {size}.", "Each bottle holds {size}.", "Size: {size}."),
    "toys": ("Size: {size}.",),
}

FILLERS = {
    "apparel": (
        "Machine washable at 30 degrees.", "A relaxed fit that works for everyday wear.",
        "Double-stitched seams keep it in shape wash after wash.", "Cut for easy layering.",
        "The fabric feels soft from the first wear.", "Tumble dry on low heat.",
        "Designed for comfort on long days.", "A wardrobe staple that goes with almost anything.",
        "Hand finished with reinforced cuffs.", "Pairs well with both casual and smart outfits.",
    ),
    "electronics": (
        "Battery life lasts a full working day.", "Setup takes less than five minutes.",
        "Ships with a charging cable and a quick-start guide.", "Firmware updates arrive over the air.",
        "Works with both Windows and macOS.", "Covered by a two-year warranty.",
        "Charges fully in about two hours.", "Compact enough to slip into a bag.",
        "Connects over Bluetooth in seconds.", "Low latency makes it good for video calls.",
    ),
    "home": (
        "Easy to clean with a damp cloth.", "Adds a warm touch to any living room.",
        "Dishwasher safe.", "Each piece is finished by hand, so small variations are normal.",
        "A thoughtful housewarming gift.", "Made to last for years of daily use.",
        "Fits neatly on a shelf or side table.", "Gets softer with every wash.",
        "Packed in plastic-free packaging.", "Designed in a small studio.",
    ),
    "sports": (
        "Built for training sessions indoors and outdoors.", "Light enough to carry all day.",
        "Grips well even when wet.", "A solid choice for beginners and regular athletes alike.",
        "Tested over hundreds of hours of use.", "Easy to wipe clean after a workout.",
        "Stays comfortable on long runs.", "Packs down small for travel.",
        "Approved for club and school use.", "Designed with input from coaches.",
    ),
    "beauty": (
        "Suitable for all skin types.", "Dermatologically tested.", "Free from parabens and added fragrance.",
        "Apply morning and evening.", "Absorbs quickly without a greasy feel.", "Not tested on animals.",
        "A little goes a long way.", "Vegan formula.", "Long-lasting wear throughout the day.",
        "Store in a cool, dry place.",
    ),
    "toys": (
        "Suitable for ages 3 and up.", "Encourages creative play and problem solving.",
        "Batteries are not included.", "Rounded edges make it safe for small hands.",
        "A favourite gift for birthdays.", "Comes in a sturdy storage box.",
        "Meets European toy safety standards.", "Great for playing together as a family.",
        "Easy to clean with a damp cloth.", "Keeps children busy for hours.",
    ),
}

#: (template, attributes it states); "{Product}" is the product with a capital first letter.
OPENINGS = (
    ("The {brand} {product} {is} a dependable everyday pick.", {"brand"}),
    ("{brand} presents its {product} in {colour}.", {"brand", "colour"}),
    ("{this} {product} from {brand} {is} made of {material}.", {"brand", "material"}),
    ("Meet the {colour} {product} by {brand}.", {"brand", "colour"}),
    ("{brands} {material} {product} {is} back in stock.", {"brand", "material"}),
    ("Introducing the {product} from {brand}.", {"brand"}),
    ("{A}{colour} {material} {product} from {brand}.", {"brand", "colour", "material"}),
    ("Looking for {a}new {product}? {brand} has you covered.", {"brand"}),
    ("{this} {product} {is} a dependable everyday pick.", set()),
    ("{A}{colour} {product} made of {material}.", {"colour", "material"}),
    ("Meet {this} {colour} {product}.", {"colour"}),
    ("{A}well-made {product} in {material}.", {"material"}),
    ("Here {is} {a}{product} worth a closer look.", set()),
    ("{Product} for sale.", set()),
)

BRAND_PHRASES = ("Brand: {brand}.", "Made by {brand}.", "Designed by {brand}.", "From the {brand} range.")
COLOUR_PHRASES = ("Colour: {colour}.", "Color: {colour}.", "{It} {comes} in {colour}.", "Available in {colour}.",
                  "Shown here in {colour}.", "The finish is {colour}.")
MATERIAL_PHRASES = ("Made from {material}.", "Material: {material}.", "Crafted from {material}.",
                    "{It} {is} made of {material}.")
PRICE_PHRASES = ("Price: {price}.", "{It} {retails} for {price}.", "Yours for {price}.", "Now {price}.",
                 "List price {price}.", "Priced at {price}.", "{It} {sells} for {price}.")

#: Refusals and boilerplate an assistant (or a careless annotator) produced instead of the JSON.
BOILERPLATE = (
    "As an AI language model, I cannot access product information or extract attributes from descriptions.",
    "As an AI language model, I cannot browse online stores, so I am unable to verify these product details.",
    "I'm sorry, but I can't help with that request.",
    "I'm sorry, I cannot provide that information. Please consult the retailer's website for accurate product "
    "details.",
    "As an AI, I do not have personal opinions about products, but choosing the right one depends on your needs.",
    "Unfortunately, I am not able to process this request. Is there anything else I can help you with?",
)

#: Near-duplicate edits: a phrase swapped for one meaning the same.
SYNONYMS = {
    "made of": "made from", "dependable": "reliable", "everyday": "daily", "back in stock": "available again",
    "has you covered": "has the answer", "Introducing": "Presenting", "worth a closer look": "worth a look",
    "for sale": "on sale", "Crafted from": "Produced from", "Made by": "Produced by", "Designed by": "Created by",
    "Shown here in": "Pictured in", "Available in": "Offered in", "Yours for": "Get it for", "soft": "gentle",
    "Easy to clean": "Simple to clean", "warm": "cosy", "sturdy": "strong", "comfortable": "comfy",
    "Compact": "Small", "neatly": "nicely", "favourite": "popular", "solid choice": "good choice",
    "great": "ideal", "full": "whole", "quickly": "fast", "Keeps children busy": "Keeps kids busy",
    "thoughtful": "lovely", "relaxed": "loose", "Tested": "Checked",
}


# ----------------------------------------------------------------------------- other languages


@dataclass(frozen=True)
class ForeignKind:
    category: str
    name: str
    sizes: tuple[str, ...] | None
    materials: tuple[str, ...] | None


@dataclass(frozen=True)
class Language:
    code: str
    instruction: str
    kinds: tuple[ForeignKind, ...]
    colours: tuple[str, ...]
    openings_with_brand: tuple[str, ...]
    openings: tuple[str, ...]
    brand: tuple[str, ...]
    colour: tuple[str, ...]
    material: tuple[str, ...]
    size: tuple[str, ...]
    price: tuple[str, ...]
    fillers: tuple[str, ...]
    size_other: tuple[str, ...] | None = None  # size phrases for non-clothing, when the word differs


LANGUAGES = (
    Language(
        code="de",
        instruction="Extrahiere die Produktattribute aus der Beschreibung als JSON-Objekt mit den Schlüsseln "
        "brand, product, colour, size, material, price und currency. Verwende null für fehlende Angaben.",
        kinds=(
            ForeignKind("apparel", "Regenjacke", LETTER_SIZES, ("Nylon", "Polyester")),
            ForeignKind("apparel", "Wollpullover", LETTER_SIZES, ("Merinowolle", "Lammwolle")),
            ForeignKind("apparel", "Jeans", WAISTS, ("Baumwolle", "Stretch-Denim")),
            ForeignKind("apparel", "Leinenhemd", LETTER_SIZES, ("Leinen",)),
            ForeignKind("home", "Kaffeetasse", ("350 ml", "400 ml"), ("Keramik", "Steingut")),
            ForeignKind("home", "Tischlampe", ("30 cm", "45 cm"), ("Messing", "Eichenholz")),
            ForeignKind("sports", "Yogamatte", ("183 x 61 cm",), ("Naturkautschuk", "Kork")),
            ForeignKind("sports", "Laufschuhe", SHOES, ("Mesh", "Kunstleder")),
            ForeignKind("electronics", "Kopfhörer", None, ("Kunststoff", "Aluminium")),
            ForeignKind("beauty", "Gesichtscreme", ("30 ml", "50 ml"), None),
            ForeignKind("toys", "Holzpuzzle", ("24 Teile", "48 Teile"), ("Buchenholz",)),
        ),
        colours=("schwarz", "weiß", "dunkelblau", "rot", "grün", "grau", "beige", "senfgelb"),
        openings_with_brand=("{product} von {brand}.", "Neu von {brand}: {product}.",
                             "{brand} präsentiert: {product}."),
        openings=("{product} zu verkaufen.", "Neu im Sortiment: {product}."),
        brand=("Marke: {brand}.", "Hergestellt von {brand}."),
        colour=("Farbe: {colour}.", "Erhältlich in {colour}."),
        material=("Material: {material}.", "Gefertigt aus {material}."),
        size=("Größe: {size}.", "Erhältlich in Größe {size}."),
        price=("Preis: {price}.", "Jetzt für nur {price}.", "Unser Preis: {price}."),
        fillers=("Pflegeleicht und langlebig.", "Ideal für jeden Tag.", "Schneller Versand innerhalb von zwei Tagen.",
                 "Ein schönes Geschenk für Freunde und Familie.", "Hohe Qualität zu einem fairen Preis."),
    ),
    Language(
        code="fr",
        instruction="Extrais les attributs du produit à partir de la description sous forme d'objet JSON avec "
        "les clés brand, product, colour, size, material, price et currency. Utilise null pour les "
        "informations manquantes.",
        kinds=(
            ForeignKind("apparel", "veste de pluie", LETTER_SIZES, ("nylon", "polyester")),
            ForeignKind("apparel", "pull", LETTER_SIZES, ("laine mérinos", "cachemire")),
            ForeignKind("apparel", "jean", WAISTS, ("coton", "denim stretch")),
            ForeignKind("apparel", "chemise", LETTER_SIZES, ("lin", "coton")),
            ForeignKind("home", "tasse", ("350 ml", "400 ml"), ("céramique", "grès")),
            ForeignKind("home", "lampe de table", ("30 cm", "45 cm"), ("laiton", "chêne")),
            ForeignKind("sports", "tapis de yoga", ("183 x 61 cm",), ("caoutchouc naturel", "liège")),
            ForeignKind("sports", "chaussures de course", SHOES, ("maille", "synthétique")),
            ForeignKind("electronics", "écouteurs sans fil", None, ("plastique", "aluminium")),
            ForeignKind("beauty", "crème visage", ("30 ml", "50 ml"), None),
            ForeignKind("toys", "puzzle en bois", ("24 pièces", "48 pièces"), ("hêtre",)),
        ),
        colours=("noir", "blanc", "bleu marine", "rouge", "vert", "gris", "beige", "jaune moutarde"),
        openings_with_brand=("{product} {brand}.", "Nouveau chez {brand} : {product}.",
                             "{brand} présente : {product}."),
        openings=("{product} à vendre.", "Nouveauté : {product}."),
        brand=("Marque : {brand}.", "Fabriqué par {brand}."),
        colour=("Coloris : {colour}.", "Disponible en {colour}."),
        material=("Matière : {material}.", "Fabriqué en {material}."),
        size=("Taille : {size}.", "Disponible en taille {size}."),
        price=("Prix : {price}.", "Seulement {price}.", "Notre prix : {price}."),
        fillers=("Facile d'entretien et durable.", "Idéal pour tous les jours.", "Livraison rapide en deux jours.",
                 "Un joli cadeau pour vos proches.", "Une belle qualité à un prix juste."),
    ),
    Language(
        code="es",
        instruction="Extrae los atributos del producto de la descripción como un objeto JSON con las claves "
        "brand, product, colour, size, material, price y currency. Usa null para los datos que falten.",
        kinds=(
            ForeignKind("apparel", "chaqueta impermeable", LETTER_SIZES, ("nailon", "poliéster")),
            ForeignKind("apparel", "jersey", LETTER_SIZES, ("lana merino", "cachemira")),
            ForeignKind("apparel", "vaqueros", WAISTS, ("algodón", "denim elástico")),
            ForeignKind("apparel", "camisa", LETTER_SIZES, ("lino", "algodón")),
            ForeignKind("home", "taza", ("350 ml", "400 ml"), ("cerámica", "gres")),
            ForeignKind("home", "lámpara de mesa", ("30 cm", "45 cm"), ("latón", "roble")),
            ForeignKind("sports", "esterilla de yoga", ("183 x 61 cm",), ("caucho natural", "corcho")),
            ForeignKind("sports", "zapatillas de running", SHOES, ("malla", "sintético")),
            ForeignKind("electronics", "auriculares inalámbricos", None, ("plástico", "aluminio")),
            ForeignKind("beauty", "crema facial", ("30 ml", "50 ml"), None),
            ForeignKind("toys", "puzle de madera", ("24 piezas", "48 piezas"), ("madera de haya",)),
        ),
        colours=("negro", "blanco", "azul marino", "rojo", "verde", "gris", "beige", "amarillo mostaza"),
        openings_with_brand=("{product} de {brand}.", "Novedad de {brand}: {product}.",
                             "{brand} presenta: {product}."),
        openings=("Se vende {product}.", "Novedad: {product}."),
        brand=("Marca: {brand}.", "Fabricado por {brand}."),
        colour=("Color: {colour}.", "Disponible en {colour}."),
        material=("Material: {material}.", "Fabricado en {material}."),
        size=("Talla: {size}.", "Disponible en talla {size}."),
        price=("Precio: {price}.", "Ahora por solo {price}.", "Nuestro precio: {price}."),
        size_other=("Tamaño: {size}.", "Medidas: {size}."),
        fillers=("Fácil de cuidar y duradero.", "Ideal para el día a día.", "Envío rápido en dos días.",
                 "Un buen regalo para amigos y familia.", "Buena calidad a un precio justo."),
    ),
)
