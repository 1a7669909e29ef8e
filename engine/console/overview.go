package console

import (
	"fmt"
	"github.com/erpflow/erpflow/engine"
	"net/http"
	"net/url"
	"time"

	"github.com/erpflow/erpflow/engine/httpapi"
)

// statusAnswer is GET /v1/status as the overview reads it.
type statusAnswer struct {
	Rules        int     `json:"rules"`
	RulesEnabled int     `json:"rules_enabled"`
	Tenant       *string `json:"tenant"`
	Queue        struct {
		Pending       int        `json:"pending"`
		Running       int        `json:"running"`
		Failed        int        `json:"failed"`
		Dead          int        `json:"dead"`
		OldestWaiting *time.Time `json:"oldest_waiting"`
	} `json:"queue"`
}

// minuteBar is one minute of the overview's chart: stacked rectangles,
// succeeded at the bottom, in the SVG's coordinates.
type minuteBar struct {
	X               int
	Label           string
	Rects           []barRect
	Total           int
	Succeeded, Fail int
}

type barRect struct {
	X, Y, H int
	Class   string
}

// The chart's size in SVG units.
const (
	chartBarW   = 10
	chartHeight = 100
)

type overviewPage struct {
	S      statusAnswer
	A      httpapi.Activity
	Paused struct {
		Destinations []engine.DestinationView `json:"destinations"`
	}
	Bars   []minuteBar
	Width  int
	Peak   int
	Height int
	BarW   int
}

// overview is the landing page: queue depth by state, deliveries per
// minute over the last hour, success rate and failing destinations.
func (c *Console) overview(x *exchange) {
	var p overviewPage
	if !x.get("/v1/status", nil, &p.S) || !x.get("/v1/activity", nil, &p.A) ||
		!x.get("/v1/destinations", url.Values{"state": {engine.DestinationPaused}}, &p.Paused) {
		return
	}
	for _, m := range p.A.PerMinute {
		p.Peak = max(p.Peak, m.Succeeded+m.Failed+m.Dead)
	}
	p.Height, p.BarW = chartHeight, chartBarW-2
	for i, m := range p.A.PerMinute {
		b := minuteBar{X: i * chartBarW, Total: m.Succeeded + m.Failed + m.Dead, Succeeded: m.Succeeded, Fail: m.Failed + m.Dead,
			Label: fmt.Sprintf("%s: %d succeeded, %d failed, %d dead", m.Minute.UTC().Format("15:04"), m.Succeeded, m.Failed, m.Dead)}
		y := chartHeight
		for _, part := range []struct {
			n     int
			class string
		}{{m.Succeeded, "bar-ok"}, {m.Failed, "bar-fail"}, {m.Dead, "bar-dead"}} {
			if part.n == 0 || p.Peak == 0 {
				continue
			}
			h := max(1, part.n*chartHeight/p.Peak)
			y -= h
			b.Rects = append(b.Rects, barRect{X: b.X, Y: y, H: h, Class: part.class})
		}
		p.Bars = append(p.Bars, b)
	}
	p.Width = len(p.Bars) * chartBarW
	x.render(http.StatusOK, "overview", p)
}
