"""Protein–ligand binding sites (drivpocket card): scPDB v2017 for training, and the test sets COACH420, HOLO4K
(p2rank-datasets), SC6K (DeepPocket release) and PDBbind v2020 refined, in their public layouts.

Layouts::

    scpdb/<entry>/protein.mol2, ligand.mol2, site.mol2, cavity6.mol2     one folder per site (e.g. 1abc_1/)
    coach420|holo4k/<set>.ds + the PDB files it lists                    p2rank-datasets: ligands are HETATM
    sc6k/<entry>/<entry>_PROT.pdb + <entry>_*LIG*.mol2                   one folder per entry, one mol2 per ligand
    pdbbind/<id>/<id>_protein.pdb, <id>_ligand.mol2, <id>_pocket.pdb

An optional ``candidates.csv`` (protein, x, y, z, score: fpocket + DeepPocket's ranking) may sit beside any of them;
the pipeline reads it, the readers skip it.

Atoms are typed into libmolgrid's 14 default receptor channels (``CHANNELS``) from SYBYL types (mol2) or residue and
atom names (PDB); a carbon is "non-hydrophobe" when an N or O lies within 1.75 Å (bonds are not needed). Hydrogens,
waters, dummy atoms and lone pairs are dropped. An atom type the typer does not know is a DataError naming the file,
the atom and the fix. mol2 is read by a small reader (``read_mol2``, checked against RDKit in the tests) because
scPDB's cavity files hold pseudo-atoms that RDKit refuses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo

_P2RANK = "github.com/rdk/p2rank-datasets (the <set>.ds list and the PDB files it names)"
DATASETS = [
    DatasetInfo("scpdb", "scPDB v2017: 16,612 proteins / 17,594 binding sites (training)",
                "<entry>/protein.mol2, ligand.mol2, site.mol2, cavity6.mol2 (one folder per site)",
                "bioinfo-pharma.u-strasbg.fr/scPDB (free registration; unpack the archive of entry folders)",
                "medrun.datasets.binding_sites:fixture_scpdb", ("point-set", "3d")),
    DatasetInfo("coach420", "COACH420: 420 (207 after filtering) proteins, ligands as HETATM (test)",
                "coach420.ds + coach420/*.pdb", _P2RANK, "medrun.datasets.binding_sites:fixture_coach420",
                ("point-set", "3d")),
    DatasetInfo("holo4k", "HOLO4K: 4,009 (2,752 after filtering) holo structures, ligands as HETATM (test)",
                "holo4k.ds + holo4k/*.pdb", _P2RANK, "medrun.datasets.binding_sites:fixture_holo4k",
                ("point-set", "3d")),
    DatasetInfo("sc6k", "SC6K: 6,389 binding sites in 2,378 proteins (DeepPocket release, test)",
                "<entry>/<entry>_PROT.pdb + <entry>_*LIG*.mol2", "github.com/devalab/DeepPocket (the SC6K archive)",
                "medrun.datasets.binding_sites:fixture_sc6k", ("point-set", "3d")),
    DatasetInfo("pdbbind", "PDBbind v2020 refined set: 5,316 complexes (1,113 used as test)",
                "<id>/<id>_protein.pdb, <id>_ligand.mol2, <id>_pocket.pdb",
                "pdbbind.org.cn (registration; the refined-set archive)",
                "medrun.datasets.binding_sites:fixture_pdbbind",
                ("point-set", "3d")),
]
TEST_SETS = ("coach420", "holo4k", "sc6k", "pdbbind")

# libmolgrid's default receptor typing (defaultGninaReceptorTyper): 14 channels
CHANNELS = ("AliphaticCarbonXSHydrophobe", "AliphaticCarbonXSNonHydrophobe", "AromaticCarbonXSHydrophobe",
            "AromaticCarbonXSNonHydrophobe", "Halogen", "Nitrogen_NitrogenXSAcceptor",
            "NitrogenXSDonor_NitrogenXSDonorAcceptor", "Oxygen_OxygenXSAcceptor", "OxygenXSDonorAcceptor_OxygenXSDonor",
            "Sulfur_SulfurAcceptor", "Phosphorus", "Calcium", "Zinc", "GenericMetal_Boron_Manganese_Magnesium_Iron")
# XS radii (Å) per channel, as gnina's atom type table
RADII = (1.9, 1.9, 1.9, 1.9, 1.8, 1.8, 1.8, 1.7, 1.7, 2.0, 2.1, 1.2, 1.2, 1.2)
METALS = {"MG", "MN", "FE", "B", "NA", "K", "CU", "CO", "NI", "CD", "HG", "LI", "AL", "SR", "BA", "CS", "RB"}
ELEMENTS = {"C", "N", "O", "S", "SE", "P", "F", "CL", "BR", "I", "CA", "ZN", "H", "D"} | METALS
SKIP = {"H", "D", "DU", "LP"}  # hydrogens, dummies, lone pairs
WATERS = {"HOH", "WAT", "H2O", "DOD", "TIP", "TIP3", "SOL"}
N_DONOR = {"N.4", "N.am", "N.pl3", "N.3"}  # SYBYL nitrogens with a hydrogen (N.3 donor-acceptor in proteins)
O_DONOR = {"O.3"}  # hydroxyl oxygens: donor-acceptor
AROMATIC_NAMES = {"PHE": {"CG", "CD1", "CD2", "CE1", "CE2", "CZ"}, "TYR": {"CG", "CD1", "CD2", "CE1", "CE2", "CZ"},
                  "TRP": {"CD2", "CE2", "CE3", "CZ2", "CZ3", "CH2", "CG", "CD1"}, "HIS": {"CG", "CD2", "CE1"}}
PDB_N_DONOR = {("LYS", "NZ"), ("ARG", "NE"), ("ARG", "NH1"), ("ARG", "NH2"), ("ASN", "ND2"), ("GLN", "NE2"),
               ("TRP", "NE1"), ("HIS", "ND1"), ("HIS", "NE2")}
PDB_O_DONOR = {("SER", "OG"), ("THR", "OG1"), ("TYR", "OH")}
FAR = 8.0  # Å: a ligand whose nearest protein atom is farther than this is not bound to that protein


@dataclass
class Mol2:
    names: list
    coords: object  # (N, 3) float64
    types: list  # SYBYL types
    resnames: list


@dataclass
class Structure:
    """One protein with its binding sites: coordinates in Å, a channel (0–13) per atom, one ligand per site."""

    name: str
    coords: object  # (N, 3) float32
    channels: object  # (N,) int64
    ligands: list = field(default_factory=list)  # per site (M, 3) float32
    cavity: object = None  # (K, 3) cavity points (scPDB), or None
    path: Path | None = None

    @property
    def elements(self):
        return self.channels


# -- readers -------------------------------------------------------------------------------------------------------
def read_mol2(path: Path) -> Mol2:
    """The first molecule's @<TRIPOS>ATOM records: names, coordinates, SYBYL types, substructure names."""
    import numpy as np

    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}", fix="check the file exists and is readable") from None
    names, xyz, types, res, section, seen = [], [], [], [], None, 0
    for no, line in enumerate(text.splitlines(), 1):
        if line.startswith("@<TRIPOS>"):
            section = line[9:].strip().upper()
            if section == "MOLECULE":
                seen += 1
                if seen > 1:
                    break
            continue
        if section != "ATOM" or not line.strip():
            continue
        f = line.split()
        try:
            if len(f) < 6:
                raise ValueError
            xyz.append((float(f[2]), float(f[3]), float(f[4])))
        except ValueError:
            raise DataError(f"{path}:{no}: not a mol2 ATOM record: {line.strip()[:60]!r}",
                            fix="expected 'id name x y z type [subst_id subst_name charge]'") from None
        names.append(f[1])
        types.append(f[5])
        res.append(f[7] if len(f) > 7 else "")
    if not xyz:
        raise DataError(f"{path} has no atoms (no @<TRIPOS>ATOM records)",
                        fix="replace it with the entry's original mol2 file")
    return Mol2(names, np.asarray(xyz, dtype=np.float64), types, res)


def _element(sybyl: str) -> str:
    return sybyl.split(".")[0].upper()


def _carbon_polar(coords, is_c, is_no):
    """Carbons with an N or O within 1.75 Å (bonded): XS non-hydrophobe."""
    import numpy as np
    from scipy.spatial import cKDTree

    out = np.zeros(len(coords), bool)
    if is_no.any() and is_c.any():
        near = cKDTree(coords[is_no]).query_ball_point(coords[is_c], 1.75)
        out[np.flatnonzero(is_c)] = [bool(n) for n in near]
    return out


def type_atoms(path, coords, elements, aromatic, n_donor, o_donor, labels):
    """Channels (0–13) of heavy atoms; ``labels`` name each atom in an error."""
    import numpy as np

    elements = [e.upper() for e in elements]
    for i, e in enumerate(elements):
        if e not in ELEMENTS:
            raise DataError(f"{path}: unknown atom type {labels[i]!r} (atom {i + 1})",
                            fix="use SYBYL atom types (C.3, C.ar, N.am, O.2, S.3, Zn …) or remove the atom")
    el = np.array(elements)
    is_c, is_no = el == "C", (el == "N") | (el == "O")
    polar = _carbon_polar(coords, is_c, is_no)
    ch = np.full(len(el), 13, np.int64)
    ch[is_c] = np.where(np.asarray(aromatic)[is_c], 2, 0) + polar[is_c]
    ch[np.isin(el, ["F", "CL", "BR", "I"])] = 4
    ch[el == "N"] = np.where(np.asarray(n_donor)[el == "N"], 6, 5)
    ch[el == "O"] = np.where(np.asarray(o_donor)[el == "O"], 8, 7)
    ch[np.isin(el, ["S", "SE"])] = 9
    ch[el == "P"] = 10
    ch[el == "CA"] = 11
    ch[el == "ZN"] = 12
    return ch


def protein_from_mol2(path: Path):
    """(coords float32, channels) of a protein mol2, without hydrogens, dummies and waters."""
    import numpy as np

    m = read_mol2(path)
    keep = [i for i, (t, r) in enumerate(zip(m.types, m.resnames, strict=True))
            if _element(t) not in SKIP and r.upper()[:3] not in WATERS]
    if not keep:
        raise DataError(f"{path} has no heavy protein atoms", fix="replace it with the entry's original protein.mol2")
    xyz, types = m.coords[keep], [m.types[i] for i in keep]
    ch = type_atoms(path, xyz, [_element(t) for t in types], [t == "C.ar" for t in types],
                    [t in N_DONOR for t in types], [t in O_DONOR for t in types], types)
    return xyz.astype(np.float32), ch


def heavy_coords(path: Path):
    """Heavy-atom coordinates of a ligand or cavity mol2."""
    import numpy as np

    m = read_mol2(path)
    keep = [i for i, t in enumerate(m.types) if _element(t) not in ("H", "LP")]
    if not keep:
        raise DataError(f"{path} has no heavy atoms", fix="replace it with the entry's original file")
    return m.coords[keep].astype(np.float32)


def read_pdb(path: Path):
    """(protein coords, channels, {ligand key: coords}) of a PDB file: ATOM records are the protein (waters
    dropped); HETATM groups (chain, residue number, name) other than water are ligand candidates."""
    import numpy as np

    path = Path(path)
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}", fix="check the file exists and is readable") from None
    xyz, els, res, names, het = [], [], [], [], {}
    for no, line in enumerate(lines, 1):
        rec = line[:6].strip()
        if rec == "ENDMDL":
            break
        if rec not in ("ATOM", "HETATM"):
            continue
        try:
            p = (float(line[30:38]), float(line[38:46]), float(line[46:54]))
        except ValueError:
            raise DataError(f"{path}:{no}: unreadable coordinates in {line.strip()[:40]!r}",
                            fix="a PDB ATOM/HETATM record has x, y, z in columns 31–54") from None
        name, rn = line[12:16].strip(), line[17:20].strip().upper()
        el = (line[76:78].strip() or "".join(c for c in name if c.isalpha())[:1]).upper()
        if el in SKIP or rn in WATERS:
            continue
        if rec == "HETATM":
            het.setdefault((line[21], line[22:26].strip(), rn), []).append(p)
            continue
        xyz.append(p)
        els.append(el)
        res.append(rn)
        names.append(name)
    if not xyz:
        raise DataError(f"{path} has no protein atoms (no ATOM records)", fix="point the reader at the protein PDB")
    xyz = np.asarray(xyz, np.float64)
    ch = type_atoms(path, xyz, els, [n in AROMATIC_NAMES.get(r, ()) for r, n in zip(res, names, strict=True)],
                    [n == "N" and r != "PRO" or (r, n) in PDB_N_DONOR for r, n in zip(res, names, strict=True)],
                    [(r, n) in PDB_O_DONOR for r, n in zip(res, names, strict=True)],
                    [f"{r} {n} ({e})" for r, n, e in zip(res, names, els, strict=True)])
    return xyz.astype(np.float32), ch, {k: np.asarray(v, np.float32) for k, v in het.items()}


def check_near(path: Path, coords, ligand, protein_file: Path) -> None:
    """A ligand must touch its protein: nearest protein atom within ``FAR`` Å."""
    from scipy.spatial import cKDTree

    d = float(cKDTree(coords).query(ligand)[0].min())
    if d > FAR:
        raise DataError(f"{path}: the ligand lies {d:.1f} Å from the nearest atom of {protein_file.name} "
                        f"(a bound ligand is within {FAR:g} Å)",
                        fix="check that the ligand and protein files belong to the same entry and coordinate frame")


# -- the layouts ---------------------------------------------------------------------------------------------------
def list_entries(name: str, root: Path) -> list:
    """The items of a dataset: entry folders (scpdb, sc6k, pdbbind) or PDB files (coach420, holo4k), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{name} folder not found: {root}", fix=f"pass --data-dir /path/to/{name}")
    if name in ("coach420", "holo4k"):
        ds = [root / f"{name}.ds"] if (root / f"{name}.ds").is_file() else sorted(root.glob("*.ds"))
        if ds:
            items = []
            for line in ds[0].read_text().splitlines():
                line = line.split("#")[0].strip()
                if not line or line.upper().startswith("HEADER"):
                    continue
                p = root / line.split()[0]
                if not p.is_file():
                    raise DataError(f"{ds[0]} lists {line.split()[0]}, which is not under {root}",
                                    fix="keep the .ds file beside the folders it names (p2rank-datasets layout)")
                items.append(p)
        else:
            items = sorted(p for p in root.rglob("*.pdb") if not p.name.startswith("."))
        if not items:
            raise DataError(f"no PDB files in {root} (no {name}.ds either)",
                            fix=f"point --data-dir at the p2rank-datasets folder holding {name}.ds")
        return items
    marker = {"scpdb": "protein.mol2", "sc6k": "*.pdb", "pdbbind": "*_protein.pdb"}[name]
    items = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and any(p.glob(marker)))
    if not items:
        shown = {"scpdb": "<entry>/protein.mol2", "sc6k": "<entry>/<entry>_PROT.pdb",
                 "pdbbind": "<id>/<id>_protein.pdb"}[name]
        raise DataError(f"no {name} entries ({shown}) in {root}",
                        fix=f"point --data-dir at the unpacked {name} folder of entry folders")
    return items


def load(name: str, item: Path) -> Structure:
    """One item of ``list_entries`` as a Structure (checked: atoms, types, ligands near the protein)."""
    item = Path(item)
    if name == "scpdb":
        prot = item / "protein.mol2"
        xyz, ch = protein_from_mol2(prot)
        for f in ("ligand.mol2", "cavity6.mol2"):
            if not (item / f).is_file():
                raise DataError(f"{item / f} is missing", fix="every scPDB entry folder holds protein.mol2, "
                                                             "ligand.mol2, site.mol2 and cavity6.mol2")
        lig = heavy_coords(item / "ligand.mol2")
        check_near(item / "ligand.mol2", xyz, lig, prot)
        return Structure(item.name, xyz, ch, [lig], heavy_coords(item / "cavity6.mol2"), item)
    if name in ("coach420", "holo4k"):
        xyz, ch, het = read_pdb(item)
        ligs = [v for v in het.values() if len(v) >= 5]
        ligs = [v for v in ligs if _min_dist(xyz, v) <= 4.0]  # relevant: ≥ 5 heavy atoms in contact (p2rank-like)
        if not ligs:
            raise DataError(f"{item} has no ligand (HETATM group of ≥ 5 heavy atoms within 4 Å of the protein)",
                            fix=f"remove it from the {name}.ds list")
        return Structure(item.stem, xyz, ch, ligs, None, item)
    if name == "sc6k":
        pdbs = sorted(item.glob("*.pdb"))
        prot = next((p for p in pdbs if "PROT" in p.name.upper() or "PROTEIN" in p.name.upper()), pdbs[0])
        xyz, ch, _ = read_pdb(prot)
        mol2 = sorted(item.glob("*.mol2"))
        if not mol2:
            raise DataError(f"{item} has no ligand mol2", fix="an SC6K entry holds the protein PDB and its ligands' "
                                                              "mol2 files")
        ligs = [heavy_coords(p) for p in mol2]
        for p, lig in zip(mol2, ligs, strict=True):
            check_near(p, xyz, lig, prot)
        return Structure(item.name, xyz, ch, ligs, None, item)
    prot, lig_f = item / f"{item.name}_protein.pdb", item / f"{item.name}_ligand.mol2"
    if not lig_f.is_file():
        raise DataError(f"{lig_f} is missing", fix="a PDBbind entry holds <id>_protein.pdb and <id>_ligand.mol2")
    xyz, ch, _ = read_pdb(prot)
    lig = heavy_coords(lig_f)
    check_near(lig_f, xyz, lig, prot)
    return Structure(item.name, xyz, ch, [lig], None, item)


def _min_dist(a, b) -> float:
    from scipy.spatial import cKDTree

    return float(cKDTree(a).query(b)[0].min())


# -- fixtures: synthetic proteins with a carved, N/O-lined pocket ---------------------------------------------------
def synth_protein(rng):
    """A blob of 3 overlapping spheres (radius 7–9 Å) filled with atoms on a jittered 2.3 Å lattice (a few hundred
    atoms, C/N/O/S), a spherical cavity (radius 3.5–4.5 Å) carved at a surface point, its lining enriched in N/O,
    10–20 ligand atoms inside it and the cavity's grid points (1 Å). Returns a dict of arrays."""
    import numpy as np

    centres = [np.zeros(3)]
    for _ in range(2):
        d = rng.normal(size=3)
        centres.append(centres[rng.integers(len(centres))] + 8.0 * d / np.linalg.norm(d))
    centres = np.array(centres)
    radii = rng.uniform(7.0, 9.0, len(centres))
    g = np.arange(-20, 20.01, 2.3)
    lat = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3) + rng.uniform(-.4, .4, (len(g) ** 3, 3))
    inside = (np.linalg.norm(lat[:, None] - centres[None], axis=-1) < radii).any(1)
    atoms = lat[inside]
    # a surface point: along a random direction, the last lattice atom of the blob, pushed 1.5 Å inwards
    d = rng.normal(size=3)
    d /= np.linalg.norm(d)
    proj = atoms @ d
    surf = atoms[np.argmax(proj)] - 1.0 * d
    rc = rng.uniform(3.5, 4.5)
    dist = np.linalg.norm(atoms - surf, axis=1)
    atoms, dist = atoms[dist > rc], dist[dist > rc]
    lining = dist < rc + 3.0
    p_no = np.where(lining, 0.75, 0.15)
    u = rng.uniform(size=len(atoms))
    el = np.where(u < p_no / 2, "N", np.where(u < p_no, "O", np.where(u < p_no + 0.04, "S", "C")))
    arom = (el == "C") & (rng.uniform(size=len(atoms)) < 0.25)
    sybyl = np.where(el == "N", np.where(rng.uniform(size=len(atoms)) < .6, "N.am", "N.2"),
                     np.where(el == "O", np.where(rng.uniform(size=len(atoms)) < .4, "O.3", "O.2"),
                              np.where(el == "S", "S.3", np.where(arom, "C.ar", "C.3"))))
    lig = [surf]
    while len(lig) < rng.integers(10, 21):
        p = surf + rng.uniform(-1, 1, 3) * (rc - 1.2)
        if np.linalg.norm(p - surf) < rc - 1.2 and min(np.linalg.norm(p - q) for q in lig) > 1.1:
            lig.append(p)
    cg = np.arange(-6, 6.01, 1.0)
    cav = surf + np.stack(np.meshgrid(cg, cg, cg, indexing="ij"), -1).reshape(-1, 3)
    from scipy.spatial import cKDTree

    cav = cav[(np.linalg.norm(cav - surf, axis=1) < rc) & (cKDTree(atoms).query(cav)[0] > 2.0)]
    return {"atoms": atoms, "sybyl": sybyl, "ligand": np.array(lig), "cavity": cav, "centre": surf}


def write_mol2(path: Path, coords, sybyl, name: str, resname: str = "UNK") -> None:
    lines = ["@<TRIPOS>MOLECULE", name, f" {len(coords)} 0 1 0 0", "PROTEIN" if resname != "LIG" else "SMALL",
             "NO_CHARGES", "", "@<TRIPOS>ATOM"]
    for i, (p, t) in enumerate(zip(coords, sybyl, strict=True), 1):
        el = t.split(".")[0]
        sub = 1 if resname == "LIG" else i
        lines.append(f"{i:7d} {el}{i:<6d} {p[0]:10.4f} {p[1]:10.4f} {p[2]:10.4f} {t:<6s} {sub:5d}"
                     f" {resname}{'' if resname == 'LIG' else i}  0.0000")
    lines += ["@<TRIPOS>BOND", "@<TRIPOS>SUBSTRUCTURE", f"     1 {resname}1   1 RESIDUE", ""]
    Path(path).write_text("\n".join(lines))


# SYBYL type → (residue, atom name, element) for the PDB files of the fixtures (typed the same by read_pdb)
_PDB_NAMES = {"C.3": ("ALA", "CB", "C"), "C.ar": ("PHE", "CZ", "C"), "N.am": ("GLY", "N", "N"),
              "N.2": ("PRO", "N", "N"), "O.2": ("GLY", "O", "O"), "O.3": ("SER", "OG", "O"), "S.3": ("MET", "SD", "S")}


def write_pdb(path: Path, coords, sybyl, ligands=()) -> None:
    lines, n = ["HEADER    SYNTHETIC PROTEIN (MEDRUN FIXTURE)"], 0
    for i, (p, t) in enumerate(zip(coords, sybyl, strict=True)):
        rn, an, el = _PDB_NAMES[t]
        n += 1
        lines.append(f"ATOM  {n:5d} {an:<4s} {rn:3s} A{(i % 9999) + 1:4d}    {p[0]:8.3f}{p[1]:8.3f}{p[2]:8.3f}"
                     f"  1.00 20.00          {el:>2s}")
    for j, lig in enumerate(ligands):
        for p in lig:
            n += 1
            lines.append(f"HETATM{n:5d}  C1  LIG B{j + 1:4d}    {p[0]:8.3f}{p[1]:8.3f}{p[2]:8.3f}  1.00 20.00"
                         "           C")
    lines += ["END", ""]
    Path(path).write_text("\n".join(lines))


def _candidates(rng, name: str, s: dict) -> list[str]:
    """fpocket + DeepPocket-style candidates: the true pocket seen 4–7 Å off its centre (score 0.9), and a decoy
    at another surface point (score 0.4)."""
    import numpy as np

    d = rng.normal(size=3)
    d /= np.linalg.norm(d)
    true = s["centre"] + d * rng.uniform(4.0, 7.0)
    far = s["atoms"][np.argmax(np.linalg.norm(s["atoms"] - s["centre"], axis=1))]
    return [f"{name},{true[0]:.3f},{true[1]:.3f},{true[2]:.3f},0.9",
            f"{name},{far[0]:.3f},{far[1]:.3f},{far[2]:.3f},0.4"]


def _fixture(out_dir: Path, seed: int, name: str, n: int) -> Path:
    import numpy as np

    rng = np.random.default_rng(seed + {"scpdb": 0, "coach420": 1, "holo4k": 2, "sc6k": 3, "pdbbind": 4}[name])
    root = Path(out_dir) / name
    root.mkdir(parents=True, exist_ok=True)
    cands, ds = ["protein,x,y,z,score"], []
    for i in range(n):
        s = synth_protein(rng)
        pid = f"{i + 1}{'abcdefghijklmnopqrstuvwxyz'[i % 26]}{'xyzw'[i // 26 % 4]}{i % 10}"
        if name == "scpdb":
            e = root / f"{pid}_1"
            e.mkdir(exist_ok=True)
            write_mol2(e / "protein.mol2", s["atoms"], s["sybyl"], pid, "RES")
            write_mol2(e / "ligand.mol2", s["ligand"], ["C.3"] * len(s["ligand"]), "LIG", "LIG")
            write_mol2(e / "cavity6.mol2", s["cavity"], ["Du"] * len(s["cavity"]), "cavity", "CAV")
            lining = s["atoms"][np.linalg.norm(s["atoms"] - s["centre"], axis=1) < 6.5]
            write_mol2(e / "site.mol2", lining, ["C.3"] * len(lining), "site", "SIT")
            pid = e.name
        elif name in ("coach420", "holo4k"):
            (root / name).mkdir(exist_ok=True)
            write_pdb(root / name / f"{pid}A.pdb", s["atoms"], s["sybyl"], [s["ligand"]])
            ds.append(f"{name}/{pid}A.pdb")
            pid = f"{pid}A"
        elif name == "sc6k":
            e = root / f"{pid.upper()}_A"
            e.mkdir(exist_ok=True)
            write_pdb(e / f"{e.name}_PROT.pdb", s["atoms"], s["sybyl"])
            write_mol2(e / f"{e.name}_LIG_1.mol2", s["ligand"], ["C.3"] * len(s["ligand"]), "LIG", "LIG")
            pid = e.name
        else:
            e = root / pid
            e.mkdir(exist_ok=True)
            write_pdb(e / f"{pid}_protein.pdb", s["atoms"], s["sybyl"])
            write_mol2(e / f"{pid}_ligand.mol2", s["ligand"], ["C.3"] * len(s["ligand"]), "LIG", "LIG")
            lining = s["atoms"][np.linalg.norm(s["atoms"] - s["centre"], axis=1) < 6.5]
            write_pdb(e / f"{pid}_pocket.pdb", lining, s["sybyl"][np.linalg.norm(s["atoms"] - s["centre"], axis=1)
                                                                  < 6.5])
        cands += _candidates(rng, pid, s)
    if ds:
        (root / f"{name}.ds").write_text("# synthetic p2rank-datasets list (medrun fixture)\n" + "\n".join(ds) + "\n")
    (root / "candidates.csv").write_text("\n".join(cands) + "\n")
    return root


def fixture_scpdb(out_dir: Path, seed: int = 0) -> Path:
    """24 synthetic scPDB entries (a few hundred atoms each) with candidates.csv (test boxes 4–7 Å off)."""
    return _fixture(out_dir, seed, "scpdb", 24)


def fixture_coach420(out_dir: Path, seed: int = 0) -> Path:
    return _fixture(out_dir, seed, "coach420", 6)


def fixture_holo4k(out_dir: Path, seed: int = 0) -> Path:
    return _fixture(out_dir, seed, "holo4k", 6)


def fixture_sc6k(out_dir: Path, seed: int = 0) -> Path:
    return _fixture(out_dir, seed, "sc6k", 6)


def fixture_pdbbind(out_dir: Path, seed: int = 0) -> Path:
    return _fixture(out_dir, seed, "pdbbind", 6)
