"""Binding-site datasets (drivpocket): fixtures in the five public layouts, the mol2 reader against RDKit, PDB and
mol2 typing agreeing, and bad files refused with one clear line."""

from pathlib import Path

import numpy as np
import pytest

from medrun.datasets import binding_sites as bs
from medrun.datasets import get
from medrun.errors import DataError

NAMES = ("scpdb", "coach420", "holo4k", "sc6k", "pdbbind")


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    out = tmp_path_factory.mktemp("sites")
    return {n: get(n).make_fixture(out, 0) for n in NAMES}


def test_fixtures_are_in_the_public_layouts(roots):
    e = roots["scpdb"] / "1ax0_1"
    assert {p.name for p in e.iterdir()} == {"protein.mol2", "ligand.mol2", "site.mol2", "cavity6.mol2"}
    assert (roots["coach420"] / "coach420.ds").read_text().splitlines()[1].startswith("coach420/")
    assert (roots["holo4k"] / "holo4k").is_dir()
    sc = next(p for p in roots["sc6k"].iterdir() if p.is_dir())
    assert (sc / f"{sc.name}_PROT.pdb").is_file() and (sc / f"{sc.name}_LIG_1.mol2").is_file()
    pb = next(p for p in roots["pdbbind"].iterdir() if p.is_dir())
    assert {p.name for p in pb.iterdir()} == {f"{pb.name}_protein.pdb", f"{pb.name}_ligand.mol2",
                                              f"{pb.name}_pocket.pdb"}
    sizes = sum(f.stat().st_size for r in roots.values() for f in r.rglob("*") if f.is_file())
    assert sizes < 5e6
    for n, root in roots.items():
        items = bs.list_entries(n, root)
        assert len(items) == (24 if n == "scpdb" else 6)
        s = bs.load(n, items[0])
        assert 200 < len(s.coords) < 700 and len(s.ligands) == 1 and 10 <= len(s.ligands[0]) <= 20
        assert s.channels.min() >= 0 and s.channels.max() < 14
        assert (s.cavity is not None) == (n == "scpdb")
        assert (root / "candidates.csv").read_text().startswith("protein,x,y,z,score")


def test_mol2_reader_matches_rdkit(roots):
    from rdkit import Chem

    e = roots["scpdb"] / "1ax0_1"
    for f in ("protein.mol2", "ligand.mol2", "cavity6.mol2"):
        ref = Chem.MolFromMol2File(str(e / f), sanitize=False, removeHs=False)
        ours = bs.read_mol2(e / f)
        assert ref.GetNumAtoms() == len(ours.coords)
        np.testing.assert_allclose(ref.GetConformer().GetPositions(), ours.coords, atol=1e-4)
        if f == "protein.mol2":
            assert [a.GetSymbol() for a in ref.GetAtoms()] == [t.split(".")[0] for t in ours.types]


def test_pdb_and_mol2_give_the_same_channels(tmp_path):
    rng = np.random.default_rng(3)
    s = bs.synth_protein(rng)
    bs.write_mol2(tmp_path / "p.mol2", s["atoms"], s["sybyl"], "p", "RES")
    bs.write_pdb(tmp_path / "p.pdb", s["atoms"], s["sybyl"], [s["ligand"]])
    xyz_m, ch_m = bs.protein_from_mol2(tmp_path / "p.mol2")
    xyz_p, ch_p, het = bs.read_pdb(tmp_path / "p.pdb")
    np.testing.assert_allclose(xyz_m, xyz_p, atol=2e-3)
    assert (ch_m == ch_p).all()
    assert len(het) == 1 and len(next(iter(het.values()))) == len(s["ligand"])
    # N/O enrichment of the pocket lining: the fixture's learnable chemistry
    d = np.linalg.norm(xyz_m - s["centre"], axis=1)
    polar = np.isin(ch_m, [5, 6, 7, 8])
    assert polar[d < 6.5].mean() > 2 * polar[d > 9].mean()


def _entry(roots, tmp_path) -> Path:
    import shutil

    dst = tmp_path / "e"
    shutil.copytree(roots["scpdb"] / "1ax0_1", dst)
    return dst


def test_bad_mol2_files(roots, tmp_path):
    e = _entry(roots, tmp_path)
    (e / "protein.mol2").write_text("@<TRIPOS>MOLECULE\nx\n 0 0 0\n\n@<TRIPOS>ATOM\n@<TRIPOS>BOND\n")
    with pytest.raises(DataError, match="protein.mol2 has no atoms"):
        bs.load("scpdb", e)
    e = _entry(roots, tmp_path / "2")
    text = (e / "protein.mol2").read_text().replace(" C.3 ", " Xx.9 ", 1)
    (e / "protein.mol2").write_text(text)
    with pytest.raises(DataError, match=r"protein.mol2: unknown atom type 'Xx.9'"):
        bs.load("scpdb", e)
    e = _entry(roots, tmp_path / "3")
    lig = bs.read_mol2(e / "ligand.mol2").coords + 40.0
    bs.write_mol2(e / "ligand.mol2", lig, ["C.3"] * len(lig), "LIG", "LIG")
    with pytest.raises(DataError, match=r"ligand.mol2: the ligand lies \d+\.\d Å from the nearest atom"):
        bs.load("scpdb", e)
    (e / "cavity6.mol2").unlink()
    with pytest.raises(DataError, match="cavity6.mol2 is missing"):
        bs.load("scpdb", e)


def test_empty_or_wrong_folders(tmp_path):
    with pytest.raises(DataError, match="no scpdb entries"):
        bs.list_entries("scpdb", tmp_path)
    with pytest.raises(DataError, match="no PDB files"):
        bs.list_entries("coach420", tmp_path)
    (tmp_path / "coach420.ds").write_text("coach420/missing.pdb\n")
    with pytest.raises(DataError, match="lists coach420/missing.pdb"):
        bs.list_entries("coach420", tmp_path)
