package allocator

// resTable stores reservations by id. Ids are handed out densely and in
// order, so a paged array beats a map: no hashing, no rehash on growth, and
// pages whose reservations are all forgotten are freed. Iteration is in id
// order, which snapshots need.
type resTable struct {
	basePage uint64 // page number of pages[0]
	pages    []*resPage
	n        int
}

const (
	resPageBits = 12
	resPageSize = 1 << resPageBits
)

type resPage struct {
	live  int
	slots [resPageSize]*reservation
}

func (t *resTable) len() int { return t.n }

func (t *resTable) get(id uint64) *reservation {
	pg := id >> resPageBits
	if pg < t.basePage || pg-t.basePage >= uint64(len(t.pages)) {
		return nil
	}
	p := t.pages[pg-t.basePage]
	if p == nil {
		return nil
	}
	return p.slots[id&(resPageSize-1)]
}

// put stores r; its id must be free.
func (t *resTable) put(r *reservation) {
	pg := r.id >> resPageBits
	if len(t.pages) == 0 {
		t.basePage = pg
	}
	if pg < t.basePage {
		// Only a restore can go below the base: grow at the front.
		grow := make([]*resPage, t.basePage-pg, int(t.basePage-pg)+len(t.pages))
		t.pages = append(grow, t.pages...)
		t.basePage = pg
	}
	for pg-t.basePage >= uint64(len(t.pages)) {
		t.pages = append(t.pages, nil)
	}
	p := t.pages[pg-t.basePage]
	if p == nil {
		p = new(resPage)
		t.pages[pg-t.basePage] = p
	}
	slot := &p.slots[r.id&(resPageSize-1)]
	if *slot != nil {
		panic("allocator: reservation id stored twice")
	}
	*slot = r
	p.live++
	t.n++
}

func (t *resTable) del(id uint64) {
	pg := id >> resPageBits
	if pg < t.basePage || pg-t.basePage >= uint64(len(t.pages)) {
		return
	}
	i := pg - t.basePage
	p := t.pages[i]
	if p == nil || p.slots[id&(resPageSize-1)] == nil {
		return
	}
	p.slots[id&(resPageSize-1)] = nil
	p.live--
	t.n--
	if p.live == 0 {
		t.pages[i] = nil
	}
	// Drop empty pages at the front; reservations are mostly forgotten in
	// id order, so this keeps the page index short.
	for len(t.pages) > 0 && t.pages[0] == nil {
		t.pages[0] = nil
		t.pages = t.pages[1:]
		t.basePage++
	}
}

// each calls f for every reservation in id order.
func (t *resTable) each(f func(*reservation)) {
	for _, p := range t.pages {
		if p == nil {
			continue
		}
		for _, r := range p.slots {
			if r != nil {
				f(r)
			}
		}
	}
}
